"""TinTin++ (Debian's ``tt++``) driven by the tests: a TinTin++ script in, what the client saw
out (the text of the session, every GMCP message, whether MCCP2 was on), with no terminal.

``tt++ -G -H`` runs without a tty (``-H`` is its nohup mode; without it tt++ dies on
``tcgetattr``), stdin from /dev/null, and reads the script given as its file argument.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TT = shutil.which("tt++") or "/usr/games/tt++"

# The files tt++ writes in its working directory, a temporary one for each run (PROLOGUE
# names them too).
TEXT_LOG = "text.log"
GMCP_LOG = "gmcp.log"
ENDING_LOG = "ending.log"
SCREEN = "screen.out"

# Read before the test's script, in tt++ 2.02.20's commands (a file it reads must start with
# its command character, #, or it refuses it and idles). Events and aliases defined before
# #session are copied into the session. Decisions in it:
# - tt++ answers IAC WILL GMCP with DONT unless an event answers it (the event replaces its
#   reply); a trailing backslash keeps #send from adding CR LF after the bytes.
# - A GMCP event's %2 is the whole payload, "Package.Name json", its braces, semicolons and
#   backslashes escaped; written verbatim, so that a "$name" in it is not taken for a variable.
# - #end from inside a session's own event crashes tt++ ("quitmsg(crashed)", exit 255), and a
#   #delay made there dies with the session: end from the startup session (#gts), on its next
#   turn.
# - #info mccp prints only while the session inflates MCCP2: captured, not shown. done ends
#   on the next turn, so that the line whose #action called it reaches the log first.
PROLOGUE = r"""#config {log mode} {plain}
#config {mccp} {on}
#event {IAC WILL GMCP} {#send {\xFF\xFD\xC9\}}
#event {IAC SB GMCP} {#line logverbatim {gmcp.log} {%2}}
#alias {gmcp} {#send {\xFF\xFA\xC9%0\xFF\xF0\}}
#event {SESSION DISCONNECTED} {#line logverbatim {ending.log} {closed}; #gts {#delay {0} {#end}}}
#event {SESSION TIMED OUT} {#line logverbatim {ending.log} {refused}; #gts {#delay {0} {#end}}}
#event {GAG SESSION DESTROYED} {#nop}
#alias {done} {
    #unevent {SESSION DISCONNECTED};
    #variable {harness_mccp} {};
    #line quiet {#line capture {harness_mccp} {#info mccp}};
    #line log {ending.log} {done $harness_mccp};
    #delay {0} {#end}
}
"""

# What #info mccp prints: bytes read from the socket, and what they inflated to.
MCCP2_INFO = re.compile(r"#INFO MCCP2: TOTAL IN: +\d+ TOTAL OUT: +\d+")
# The escapes tt++ puts in a GMCP event's payload so that it parses as one argument.
GMCP_ESCAPE = re.compile(r"\\(\\|;|x7B|x7D)")
GMCP_UNESCAPED = {"\\": "\\", ";": ";", "x7B": "{", "x7D": "}"}
# What tt++ draws its screen with: CSI and OSC sequences, two-byte ones (ESC =), CRs.
ESCAPE_SEQUENCE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\a]*\a|.)|\r")


@dataclass(frozen=True, slots=True)
class Gmcp:
    """One GMCP message tt++ received: ``Room.Info`` and its JSON text ("" when it has none)."""

    package: str
    payload: str

    def data(self) -> Any:
        return json.loads(self.payload) if self.payload else None


@dataclass(frozen=True, slots=True)
class TinTinRun:
    """What one run of tt++ saw.

    ``text`` is the session as a player would read it (tt++'s plain log: ANSI stripped, lines
    ending in LF, a prompt ended by GA or EOR on a line of its own, one without them run into
    the line after it), plus what the script itself printed (``#showme``); not what it sent.
    ``mccp2`` is whether tt++ was inflating MCCP2 when the script said ``done``, None when it
    did not. ``disconnected`` is True when the run ended without ``done``: the server closed
    the connection, or the script called ``#end`` itself.
    """

    text: str
    gmcp: tuple[Gmcp, ...]
    mccp2: bool | None
    disconnected: bool

    def gmcp_data(self, package: str) -> list[Any]:
        """The decoded data of every message of ``package``, in the order received."""
        return [message.data() for message in self.gmcp if message.package == package]


async def run_tintin(host: str, port: int, script: str, *, timeout: float = 20) -> TinTinRun:
    """Connect tt++ to ``host:port``, run ``script`` (TinTin++ commands) and return what it saw.

    The script runs in the connected session, before anything the server sent is read, so
    its ``#action``s see the first line. Besides TinTin++'s own commands it may use:

    - ``done``: measure MCCP2, then end tt++ (the line that triggered it is logged first);
    - ``gmcp Package.Name {"json": 1}``: send IAC SB GMCP ... IAC SE;

    and the server's IAC WILL GMCP is answered DO (``#unevent {IAC WILL GMCP}`` restores
    tt++'s DONT); ``#config {mccp} {off}`` makes it refuse MCCP2. The run also ends when the
    server closes the connection. Raises ``ConnectionRefusedError`` when tt++ could not
    connect, and ``TimeoutError`` after ``timeout`` seconds, having killed tt++.
    """
    assert shutil.which(TT), "tt++ is missing: `make test` installs Debian's tintin++ as root"
    with tempfile.TemporaryDirectory(prefix="mudgate-tintin-") as directory:
        workdir = Path(directory)
        script_path = workdir / "script.tin"
        script_path.write_text(
            f"{PROLOGUE}\n#session {{mud}} {{{host}}} {{{port}}}\n"
            f"#log {{overwrite}} {{{TEXT_LOG}}}\n{script}\n"
        )
        with (workdir / SCREEN).open("wb") as screen:
            process = await asyncio.create_subprocess_exec(
                TT, "-G", "-H", str(script_path),
                cwd=workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=screen,
                stderr=asyncio.subprocess.STDOUT,
                # tt++ keeps its history in $HOME/.tintin; its TTYPE answers come from TERM,
                # and it accepts CHARSET UTF-8 (and reports it in MTTS) only under a UTF-8 LANG.
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": directory,
                    "LANG": "C.UTF-8",
                    "TERM": "xterm-256color",
                },
            )  # fmt: skip
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"tt++ ran past {timeout} s (end the script with `done`); its screen:\n"
                    + _screen(workdir)
                ) from None
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        ending = _read(workdir / ENDING_LOG)
        if ending.startswith("refused"):
            raise ConnectionRefusedError(f"tt++ could not connect to {host}:{port}")
        assert process.returncode == 0, (
            f"tt++ exited with {process.returncode}; its screen:\n{_screen(workdir)}"
        )
        done = ending.startswith("done")
        return TinTinRun(
            text=_read(workdir / TEXT_LOG),
            gmcp=tuple(_gmcp(line) for line in _read(workdir / GMCP_LOG).splitlines()),
            mccp2=bool(MCCP2_INFO.search(ending)) if done else None,
            disconnected=not done,
        )


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _screen(workdir: Path) -> str:
    """The end of what tt++ printed, its own messages included, without escape sequences."""
    return ESCAPE_SEQUENCE.sub("", _read(workdir / SCREEN))[-2000:]


def _gmcp(line: str) -> Gmcp:
    unescaped = GMCP_ESCAPE.sub(lambda match: GMCP_UNESCAPED[match[1]], line)
    package, _, payload = unescaped.partition(" ")
    return Gmcp(package, payload)
