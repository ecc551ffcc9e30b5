"""The Tk window: the course's four buttons, the picture, a status bar and a seek slider.

Only this thread touches widgets. Everything else (RTSP, RTP, decoding) runs in
:class:`mjpeg_rtsp.player.Player`'s threads; the window polls it with
``root.after`` and shows the newest decoded frame, already scaled to fit, and tells the
player when it is on screen (:meth:`~mjpeg_rtsp.player.Player.frame_shown`): that is the
moment the status bar's latency (end-to-end, from the server's RTCP sender reports, the
median of the last frames) is measured at.
"""

from __future__ import annotations

import queue
import sys
import tkinter as tk
from tkinter import messagebox, ttk

from PIL import Image, ImageTk

from mjpeg_rtsp.client import ClientError, PlayerState
from mjpeg_rtsp.player import Player, PlayerOptions

POLL_MS = 15
STATUS_MS = 250
SEEK_STEP = 5.0


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"


def format_latency(latency: dict | None) -> str:
    """The status bar's latency: the recent median, or "--" without sender reports."""
    if latency is None:
        return "-- ms"
    return f"{latency['median']:.0f} ms"


class LoginDialog:
    """User name and password for a server that answered 401; ``done(user, password)`` on
    OK, ``done(None, None)`` on Cancel, Escape or closing the dialog."""

    def __init__(self, parent: tk.Misc, message: str, user: str | None, done) -> None:
        self.done = done
        self.top = top = tk.Toplevel(parent)
        top.title("RTSP player - log in")
        top.transient(parent)
        top.resizable(False, False)
        tk.Label(top, text=message, wraplength=320, justify=tk.LEFT).grid(
            row=0, column=0, columnspan=2, padx=10, pady=(10, 6), sticky="w")
        tk.Label(top, text="User name:").grid(row=1, column=0, padx=(10, 4), sticky="e")
        tk.Label(top, text="Password:").grid(row=2, column=0, padx=(10, 4), sticky="e")
        self.user = tk.Entry(top, width=28)
        self.user.insert(0, user or "")
        self.user.grid(row=1, column=1, padx=(0, 10), pady=2)
        self.password = tk.Entry(top, width=28, show="*")
        self.password.grid(row=2, column=1, padx=(0, 10), pady=2)
        row = tk.Frame(top)
        row.grid(row=3, column=0, columnspan=2, pady=8)
        tk.Button(row, text="OK", width=8, command=self.ok).pack(side=tk.LEFT, padx=4)
        tk.Button(row, text="Cancel", width=8, command=self.cancel).pack(side=tk.LEFT, padx=4)
        top.bind("<Return>", lambda e: self.ok())
        top.bind("<Escape>", lambda e: self.cancel())
        top.protocol("WM_DELETE_WINDOW", self.cancel)
        (self.password if user else self.user).focus_set()
        top.grab_set()

    def ok(self) -> None:
        if not self.user.get():
            self.user.focus_set()
            return
        self._finish(self.user.get(), self.password.get())

    def cancel(self) -> None:
        self._finish(None, None)

    def _finish(self, user: str | None, password: str | None) -> None:
        self.top.grab_release()
        self.top.destroy()
        self.done(user, password)


class PlayerWindow:
    def __init__(self, root: tk.Tk, player: Player, title: str) -> None:
        self.root = root
        self.player = player
        self.photo: ImageTk.PhotoImage | None = None
        self.shown_number = 0
        self.fullscreen = False
        self.dragging = False
        self.ended = False
        self.login: LoginDialog | None = None
        root.title(f"RTSP player - {title}")
        root.geometry("640x560")
        root.minsize(320, 260)
        root.protocol("WM_DELETE_WINDOW", self.close)

        # The picture lives in a frame that does not grow to fit it: the window's size decides
        # the picture's size, never the other way round.
        self.video_area = tk.Frame(root, bg="black", width=640, height=480)
        self.video_area.pack_propagate(False)
        self.video = tk.Label(self.video_area, bg="black", bd=0, highlightthickness=0,
                              text="Press Setup, then Play", fg="grey70")
        self.video.pack(fill=tk.BOTH, expand=True)
        self.video_area.bind("<Configure>", self._resized)

        seek_row = tk.Frame(root)
        self.position_label = tk.Label(seek_row, text="--:-- / --:--", width=16, anchor="w")
        self.position_label.pack(side=tk.LEFT)
        self.slider = ttk.Scale(seek_row, from_=0, to=1, orient=tk.HORIZONTAL)
        self.slider.pack(side=tk.LEFT, fill=tk.X, expand=True)
        self.slider.bind("<ButtonPress-1>", self._drag_start)
        self.slider.bind("<ButtonRelease-1>", self._drag_end)
        self.slider.state(["disabled"])

        buttons = tk.Frame(root)
        self.buttons = {}
        for name, command in (("Setup", self.setup), ("Play", self.play),
                              ("Pause", self.pause), ("Teardown", self.teardown)):
            button = tk.Button(buttons, text=name, width=10, command=command)
            button.pack(side=tk.LEFT, padx=4)
            self.buttons[name] = button

        self.status = tk.Label(root, text="Init", anchor="w", relief=tk.SUNKEN, bd=1)
        # Packed bottom-up, controls first, so a small window squeezes the picture, not them.
        self.status.pack(fill=tk.X, side=tk.BOTTOM)
        buttons.pack(pady=4, side=tk.BOTTOM)
        seek_row.pack(fill=tk.X, padx=6, side=tk.BOTTOM)
        self.video_area.pack(fill=tk.BOTH, expand=True, side=tk.TOP)

        root.bind("<space>", lambda e: self.toggle())
        root.bind("s", lambda e: self.setup())
        root.bind("t", lambda e: self.teardown())
        root.bind("<Left>", lambda e: self.seek_by(-SEEK_STEP))
        root.bind("<Right>", lambda e: self.seek_by(SEEK_STEP))
        root.bind("f", lambda e: self.toggle_fullscreen())
        root.bind("<Escape>", lambda e: self.toggle_fullscreen(False))
        root.bind("q", lambda e: self.close())
        root.bind("<Control-w>", lambda e: self.close())
        self._update_buttons()
        root.after(POLL_MS, self._poll)
        root.after(STATUS_MS, self._update_status)

    # --- actions ------------------------------------------------------------------------

    def _can(self, action: str) -> bool:
        state, busy = self.player.state, self.player.busy
        if self.player.failed is not None:
            return False
        return {
            "Setup": state is PlayerState.INIT and not busy,
            "Play": state is PlayerState.READY and not busy,
            "Pause": state is PlayerState.PLAYING and not busy,
            "Teardown": state is not PlayerState.INIT and not busy,
        }[action]

    def setup(self) -> None:
        if self._can("Setup"):
            self.player.setup()
            self._update_buttons()

    def play(self) -> None:
        if self._can("Play"):
            self.ended = False
            self.player.play()
            self._update_buttons()

    def pause(self) -> None:
        if self._can("Pause"):
            self.player.pause()
            self._update_buttons()

    def teardown(self) -> None:
        if self._can("Teardown"):
            self.player.teardown()
            self._update_buttons()

    def toggle(self) -> None:
        if self.player.state is PlayerState.PLAYING:
            self.pause()
        else:
            self.play()

    def seek_to(self, seconds: float) -> None:
        duration = self.player.duration
        if duration is None or self.player.state is PlayerState.INIT or self.player.busy:
            return
        seconds = min(max(0.0, seconds), max(0.0, duration - 0.05))
        if self.player.state is PlayerState.PLAYING:
            self.player.pause()
        self.ended = False
        self.player.play(seconds)

    def seek_by(self, delta: float) -> None:
        frame = self.player.latest_frame()
        if frame is not None and frame.position is not None:
            self.seek_to(frame.position + delta)

    def toggle_fullscreen(self, on: bool | None = None) -> None:
        self.fullscreen = (not self.fullscreen) if on is None else on
        self.root.attributes("-fullscreen", self.fullscreen)

    def close(self) -> None:
        self.status.config(text="Closing...")
        self.root.update_idletasks()
        self.player.close()
        self.root.destroy()

    # --- polling ------------------------------------------------------------------------

    def _resized(self, event: tk.Event) -> None:
        if event.width > 1 and event.height > 1:
            self.player.options.display_size = (event.width, event.height)

    def _drag_start(self, event: tk.Event) -> None:
        self.dragging = True

    def _drag_end(self, event: tk.Event) -> None:
        self.dragging = False
        self.seek_to(float(self.slider.get()))

    def _poll(self) -> None:
        while True:
            try:
                event = self.player.events.get_nowait()
            except queue.Empty:
                break
            if event.kind == "error":
                print(f"error: {event.message}", file=sys.stderr, flush=True)
                self.status.config(text=f"Error: {event.message}")
                messagebox.showerror("RTSP player", event.message, parent=self.root)
            elif event.kind == "ended":
                self.ended = True
            elif event.kind == "credentials" and self.login is None:
                self._ask_login(event.message)
        frame = self.player.latest_frame()
        if frame is not None and frame.number != self.shown_number:
            self._show(frame.image)
            self.shown_number = frame.number
            self.player.frame_shown(frame)
            duration = self.player.duration
            if frame.position is not None and duration:
                self.position_label.config(
                    text=f"{format_time(frame.position)} / {format_time(duration)}"
                )
                if not self.dragging:
                    self.slider.configure(to=duration)
                    self.slider.set(frame.position)
        self._update_buttons()
        self.root.after(POLL_MS, self._poll)

    def _ask_login(self, message: str) -> None:
        def done(user: str | None, password: str | None) -> None:
            self.login = None
            if user is None:
                self.player.cancel_login(message)  # comes back as an "error" event
            else:
                self.player.login(user, password or "")

        text = f"{message[:1].upper()}{message[1:]}.\n\nLog in to {self.player.target.url}:"
        self.login = LoginDialog(self.root, text, self.player.target.user, done)

    def _show(self, image: Image.Image) -> None:
        if self.photo is not None and self.photo.width() == image.width \
                and self.photo.height() == image.height:
            self.photo.paste(image)  # in place: no new Tk image per frame
        else:
            self.photo = ImageTk.PhotoImage(image)
            self.video.config(image=self.photo, text="")

    def _update_buttons(self) -> None:
        for name, button in self.buttons.items():
            button.config(state=tk.NORMAL if self._can(name) else tk.DISABLED)
        seekable = self.player.duration is not None and self.player.state is not PlayerState.INIT
        self.slider.state(["!disabled"] if seekable else ["disabled"])

    def _update_status(self) -> None:
        stats = self.player.stats()
        state = self.player.state.value
        if self.player.failed:
            text = f"Error: {self.player.failed}"
        else:
            if self.ended and self.player.state is not PlayerState.INIT:
                state += " (end of stream)"
            text = (
                f"{state} | {stats['fps']:.1f} fps | {stats['kbps']:.0f} kbps | "
                f"loss {stats['loss_percent']:.1f}% | jitter {stats['jitter_ms']:.1f} ms | "
                f"latency {format_latency(stats['latency_ms'])} | "
                f"{stats['width']}x{stats['height']}"
            )
        self.status.config(text=text)
        self.root.after(STATUS_MS, self._update_status)


def run_window(args, options: PlayerOptions) -> int:
    """Open the window for the launcher's parsed arguments; returns the exit code."""
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(f"error: cannot open a window ({exc}); use --headless", file=sys.stderr)
        return 1
    options.ask_credentials = True  # a 401 opens the log-in dialog
    options.ui_shows_frames = True  # latency is measured when _poll puts a frame on screen
    player = Player(args.target, options)
    try:
        player.start()
    except ClientError as exc:
        root.withdraw()
        messagebox.showerror("RTSP player", str(exc))
        root.destroy()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    PlayerWindow(root, player, args.target.url)
    try:
        root.mainloop()
    except KeyboardInterrupt:
        player.close()
    return 1 if player.failed else 0
