#!/usr/bin/env bash
# Checks the README's two commands on a fresh minimal Debian bookworm, as a new user would run
# them: each step gets its own new `debootstrap --variant=minbase` chroot with a clean clone of
# this repository (committed work only, unless --worktree) and nothing else.
#   demo: bare minbase (no python3), `bash tools/demo.sh` (no DISPLAY: plays headless)
#   venv: python3 only, a failed `python3 -m venv .venv` left behind, then `bash tools/demo.sh`
#   test: bare minbase, `CI=true bash tools/test.sh` (the whole suite; takes a while)
# Needs root, debootstrap and network access to the Debian mirror this machine's apt uses and to
# the Python package index pip uses here (its configuration is copied in). Runs outside the suite.
#   sudo bash tools/fresh-machine.sh [--only demo|venv|test]... [--keep] [--worktree] [--refresh]
#     --keep      leave the chroots (and print where they are) instead of deleting them
#     --worktree  copy the working tree (tracked and untracked, not ignored) instead of HEAD
#     --refresh   rebuild the cached base system and downloaded packages (.cache/fresh-machine/)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
steps=() keep=no worktree=no refresh=no
while [ $# -gt 0 ]; do
  case $1 in
    --only) steps+=("$2"); shift 2 ;;
    --keep) keep=yes; shift ;;
    --worktree) worktree=yes; shift ;;
    --refresh) refresh=yes; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#steps[@]} -eq 0 ] && steps=(demo venv test)
for step in "${steps[@]}"; do
  case $step in demo|venv|test) ;; *) echo "error: unknown step $step" >&2; exit 2 ;; esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "error: needs root (debootstrap, chroot, mount): sudo bash $0 $*" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "error: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }

SUITE=bookworm
# The mirrors this machine's apt uses (one-line .list and deb822 .sources formats).
sources_uris() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n -e 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' -e 's/^URIs: *//p' | tr ' ' '\n'
}
mirror=$(sources_uris | grep -E '/debian/?$' | head -n1 || true)
security=$(sources_uris | grep -E '/debian-security/?$' | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-http://deb.debian.org/debian-security}

cache=$repo/.cache/fresh-machine
base=$cache/$SUITE-minbase.tar.gz
mkdir -p "$cache"
work=$(mktemp -d /tmp/fresh-machine.XXXXXX)
roots=()

# Kills what still runs inside a chroot (by pid), unmounts everything under it. Never fails
# (it runs in the EXIT trap, under set -e, and a failure there would skip the deletion).
release_root() {
  local root=$1 pid mnt
  for pid in $(ls /proc | grep -E '^[0-9]+$' || true); do
    if [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ]; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  # Deepest first.
  for mnt in $( (grep -F " $root/" /proc/mounts || true) | awk '{print $2}' | sort -r); do
    umount -l "$mnt" 2>/dev/null || true
  done
  return 0
}
cleanup() {
  set +e
  local root
  for root in "${roots[@]}"; do
    release_root "$root"
    if [ $keep = yes ]; then
      echo "kept: $root"
    elif grep -qF " $root/" /proc/mounts; then
      echo "warning: $root still has mounts; not deleting it" >&2
    else
      rm -rf --one-file-system "$root"
    fi
  done
  [ $keep = yes ] || rm -rf --one-file-system "$work" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $refresh = yes ] || [ ! -s "$base" ]; then
  echo "== debootstrap --variant=minbase $SUITE from $mirror (cached in $base)"
  debootstrap --variant=minbase "$SUITE" "$work/base" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    echo "error: debootstrap failed" >&2
    exit 1
  }
  tar -C "$work/base" -czf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$cache/apt-archives"
  rm -rf --one-file-system "$work/base"
fi

# pip's configuration on this machine (files, PIP_* variables) and the local paths it names
# (wheel folders, file:// indexes, certificates), so that pip in the chroot reaches packages as
# pip here does.
pip_env=()
while IFS='=' read -r name value; do
  pip_env+=("$name=$value")
done < <(env | grep -E '^PIP_[A-Z_]*=' || true)
pip_paths() {
  {
    python3 -m pip config list 2>/dev/null | sed -e "s/^[^=]*='//" -e "s/'$//"
    env | grep -E '^PIP_' | sed 's/^[^=]*=//'
  } | tr ' ' '\n' | sed -n -e 's|^file://\(.*\)/simple/\{0,1\}$|\1|' -e 's|^file://||' -e '/^\//p' |
    sort -u  # a file:// index's links may point next to its simple/ folder: take its parent
}

new_root() {
  local root=$work/$1
  roots+=("$root")
  mkdir -p "$root"
  tar -C "$root" -xzf "$base"
  {
    echo "deb $mirror $SUITE main"
    echo "deb $mirror $SUITE-updates main"
    echo "deb $security $SUITE-security main"
  } >"$root/etc/apt/sources.list"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  # What the Debian installer writes and debootstrap does not: localhost must resolve (Selenium
  # reaches chromedriver at http://localhost:PORT), as on every installed machine.
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    "$(hostname)" >"$root/etc/hosts"
  # apt settings for reaching the mirror (proxy, validity of snapshot mirrors, ...).
  local conf
  for conf in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
    [ -f "$conf" ] && grep -q 'Acquire::' "$conf" && ! grep -q 'Invoke' "$conf" &&
      cp "$conf" "$root$conf"
  done
  # Downloaded packages are kept between runs (the same files as from the mirror, only faster).
  mkdir -p "$cache/apt-archives/partial"
  mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
  [ -d /etc/xdg/pip ] && mkdir -p "$root/etc/xdg" && cp -r /etc/xdg/pip "$root/etc/xdg/"
  local file
  for file in .config/pip/pip.conf .pip/pip.conf; do
    [ -f "$HOME/$file" ] && mkdir -p "$(dirname "$root/root/$file")" && cp "$HOME/$file" "$root/root/$file"
  done
  local path
  while read -r path; do
    [ -e "$path" ] && [ ! -e "$root$path" ] || continue
    if [ -d "$path" ]; then
      mkdir -p "$root$path" && mount --bind -o ro "$path" "$root$path"
    else
      mkdir -p "$(dirname "$root$path")" && cp "$path" "$root$path"
      # A CA bundle pip trusts here (e.g. a proxy's): installing ca-certificates in the chroot
      # rebuilds the bundle, so also hand it to update-ca-certificates as a local CA.
      case $path in
        *.crt|*.pem)
          mkdir -p "$root/usr/local/share/ca-certificates"
          cp "$path" "$root/usr/local/share/ca-certificates/fresh-machine-$(basename "$path" .pem).crt" ;;
      esac
    fi
  done < <(pip_paths)
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --rbind /dev "$root/dev"
  mount --make-rslave "$root/dev"
  # The project: a clean clone (or the working tree), as a user would have it.
  if [ $worktree = yes ]; then
    mkdir -p "$root/root/mjpeg-rtsp"
    git -C "$repo" ls-files -z -co --exclude-standard |
      (cd "$repo" && xargs -0 cp --parents -t "$root/root/mjpeg-rtsp" 2>/dev/null || true)
  else
    git clone -q --no-hardlinks "$repo" "$root/root/mjpeg-rtsp"
  fi
}

# Runs a command as root in the chroot's project folder, with a clean environment.
in_root() {
  local root=$1
  shift
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${pip_env[@]}" \
    /bin/bash -c 'cd /root/mjpeg-rtsp && "$@"' bash "$@"
}

declare -A result
run_step() {
  local step=$1 root=$work/$1 log=$work/$1.log start status=0
  echo "== $step: new minbase chroot"
  new_root "$step"
  start=$(date +%s)
  set +e
  case $step in
    demo) in_root "$root" bash tools/demo.sh ;;
    venv)
      in_root "$root" bash -c 'set -e
        echo "== apt-get install python3, then python3 -m venv .venv (fails: no ensurepip)"
        apt-get update -qq && apt-get install -y -qq python3 >/dev/null
        if python3 -m venv .venv; then echo "error: python3 -m venv did not fail"; exit 1; fi
        test -x .venv/bin/python
        bash tools/demo.sh' ;;
    test) in_root "$root" env CI=true bash tools/test.sh ;;
  esac 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  local took=$(($(date +%s) - start))
  if [ "$status" -eq 0 ] && { [ "$step" != venv ] || grep -q "rebuilding" "$log"; }; then
    result[$step]="PASS ($took s)"
  else
    result[$step]="FAIL (exit $status, $took s; log: $log)"
    keep_logs=yes
  fi
  echo "== $step: ${result[$step]}"
  release_root "$root"
}

keep_logs=no
for step in "${steps[@]}"; do
  run_step "$step"
done
echo
echo "fresh minbase $SUITE:"
failed=0
for step in "${steps[@]}"; do
  echo "  $step: ${result[$step]}"
  case ${result[$step]} in PASS*) ;; *) failed=1 ;; esac
done
if [ $keep_logs = yes ] && [ $keep = no ]; then
  mkdir -p "$cache/logs" && cp "$work"/*.log "$cache/logs/" && echo "logs: $cache/logs/"
fi
exit $failed
