# Sourced by tools/demo.sh and tools/test.sh (from the project folder): brings a machine from
# nothing to a working .venv. On Debian/Ubuntu whatever is missing (python3, its venv module,
# Tk, the caller's packages) is installed in one apt step; elsewhere the manual steps are printed.
#   setup_env REQUIREMENTS_FILE WANT_TK(yes|no) [DEBIAN_PACKAGE...]
# The Debian packages given are optional peers: without apt they are reported and the script goes
# on (tests needing them skip), except in CI (CI=true), where a missing peer is an error.

manual_steps() {
  cat >&2 <<'EOF'
Without apt-get, set up by hand (Python >= 3.10, with Tk for the player window):
  macOS:   python.org's installer (Tk included) or `brew install python python-tk`;
           for the tests also `brew install ffmpeg gstreamer`
  Windows: the python.org installer (Tk included), then use `py` for python3
  then, from the project folder:
    python3 -m venv .venv                 (Windows: py -m venv .venv)
    .venv/bin/python -m pip install -r requirements.txt
                                          (Windows: .venv\Scripts\python -m pip install -r requirements.txt)
    .venv/bin/python Server.py 8554
    .venv/bin/python ClientLauncher.py 127.0.0.1 8554 25000 movie.Mjpeg
  tests: pip install -r requirements-test.txt, then python -m pytest
EOF
}

# A .venv is usable when its python runs and has pip; anything else (a failed `python3 -m venv`
# leaves bin/python without pip, an interrupted run leaves it half built, a removed base
# interpreter leaves a dangling link) is deleted and rebuilt.
venv_ok() {
  [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1
}

deb_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

setup_env() {
  # macOS's bash 3.2 calls "${empty_array[@]}" unbound under set -u: off while in here.
  set +u
  local requirements=$1 want_tk=$2
  shift 2
  local peers=("$@") need=() missing_peers=() package
  PYTHON=${PYTHON:-python3}
  local have_venv=no
  venv_ok && have_venv=yes

  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    need+=(python3 python3-venv)
    [ "$want_tk" = yes ] && need+=(python3-tk)
  else
    # Debian's python3 has no ensurepip until python3.X-venv is installed.
    if [ $have_venv = no ] && ! "$PYTHON" -c "import ensurepip" 2>/dev/null; then
      need+=("$("$PYTHON" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')")
    fi
    if [ "$want_tk" = yes ] && ! "$PYTHON" -c "import tkinter" 2>/dev/null; then
      need+=(python3-tk)
    fi
  fi
  if command -v dpkg-query >/dev/null 2>&1; then
    for package in "${peers[@]}"; do
      deb_installed "$package" || missing_peers+=("$package")
    done
  else
    missing_peers=("${peers[@]}")
  fi

  local install=("${need[@]}" "${missing_peers[@]}")
  if [ ${#install[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
      local sudo=()
      if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
          echo "error: need to install ${install[*]}: run as root or install sudo" >&2
          exit 1
        }
        sudo=(sudo)
      fi
      echo "== installing Debian packages: ${install[*]}"
      if ! { "${sudo[@]}" apt-get update -qq &&
             "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
               --no-install-recommends "${install[@]}" >/dev/null; }; then
        echo "error: apt-get could not install ${install[*]}" >&2
        exit 1
      fi
    else
      if [ ${#need[@]} -gt 0 ]; then
        echo "error: no apt-get to install ${need[*]}" >&2
        manual_steps
        exit 1
      fi
      if [ "${CI:-}" = true ]; then
        echo "error: CI: no apt-get to install the test peers ${missing_peers[*]}" >&2
        exit 1
      fi
      echo "warning: no apt-get; tests that need ${missing_peers[*]} will be skipped" >&2
    fi
  fi
  if [ "$want_tk" = yes ] && ! "$PYTHON" -c "import tkinter" 2>/dev/null; then
    echo "error: $PYTHON has no Tk (tkinter) for the player window" >&2
    manual_steps
    exit 1
  fi

  # Built in place: a venv's scripts (pip, ruff, activate) embed its absolute path, so one built
  # in a temporary folder and renamed would be broken for anyone using .venv/bin/pip or
  # activate. An interrupted build is safe anyway: venv_ok rejects it on the next run.
  if [ $have_venv = no ]; then
    if [ -e .venv ]; then
      echo "== .venv is broken (no working python with pip): rebuilding it"
      rm -rf .venv
    else
      echo "== creating .venv"
    fi
    if ! "$PYTHON" -m venv .venv; then
      rm -rf .venv
      echo "error: '$PYTHON -m venv .venv' failed" >&2
      exit 1
    fi
  fi
  echo "== installing $requirements into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
  set -u
}
