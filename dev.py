#!/usr/bin/env python3
"""Set up Tocsin in ./.venv and run it: the only thing a fresh machine needs is Python 3.11.

    python3 dev.py demo     # install, then run a shipped runbook end to end in the sandbox
    python3 dev.py test     # install, then run the whole test suite
    python3 dev.py lint     # install, then ruff and mypy
    python3 dev.py bench    # install, then every benchmark: one table (--quick, --only,
                            # --json, --readme: see bench/suite.py)

Each command creates the virtual environment when it is missing and (re)installs
the project when pyproject.toml changed since the last install, so running it
twice costs seconds. Debian packages needed by some tests are installed with
apt-get when running as root and they are missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".tocsin-installed"
# What Tocsin needs from Debian: a command, or "lib:NAME" for a shared library.
SYSTEM_PACKAGES: dict[str, str] = {
    "lib:pango-1.0": "libpango-1.0-0",  # PDF reports (WeasyPrint)
    "lib:pangoft2-1.0": "libpangoft2-1.0-0",
    # Without it WeasyPrint warns at import (font subsetting), and the tests fail on warnings.
    "lib:harfbuzz-subset": "libharfbuzz-subset0",
    "fc-list": "fonts-dejavu-core",  # a font for PDF reports; brings fontconfig
}
# ...and what only its tests need.
TEST_SYSTEM_PACKAGES: dict[str, str] = {
    "chromium": "chromium",  # renders the HTML report in a browser
    "openssl": "openssl",  # reads the fake Vault PKI's CRL as a second opinion
}


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def run(
    *command: str | Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> int:
    """Run a command; with ``log``, its output goes there and is shown only if it fails."""
    if log is None:
        result = subprocess.run([str(part) for part in command], cwd=ROOT, env=env)
    else:
        with log.open("a") as sink:
            result = subprocess.run(
                [str(part) for part in command], cwd=ROOT, env=env, stdout=sink, stderr=sink
            )
    if check and result.returncode != 0:
        if log is not None:
            print(log.read_text()[-6000:], file=sys.stderr)
        say(f"command failed ({result.returncode}): {' '.join(str(p) for p in command)}")
        sys.exit(result.returncode)
    return result.returncode


def ensure_python() -> None:
    if sys.version_info[:2] not in ((3, 11), (3, 12)):
        say(f"Tocsin needs Python 3.11 or 3.12; this is {sys.version.split()[0]}")
        sys.exit(2)


def ensure_venv() -> None:
    if not (BIN / "python").exists():
        say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    fingerprint = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        return
    log = VENV / "install.log"
    say(f"installing Tocsin and its dependencies (first run: about a minute; log in {log})")
    pip = [BIN / "python", "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "install", "--upgrade", "pip", "setuptools", "wheel", log=log)
    run(*pip, "install", "--editable", ".[dev]", log=log)
    STAMP.write_text(fingerprint + "\n")


def _present(need: str) -> bool:
    if need.startswith("lib:"):
        import ctypes.util

        return ctypes.util.find_library(need.removeprefix("lib:")) is not None
    return shutil.which(need) is not None


def ensure_system_packages(packages: dict[str, str]) -> None:
    missing = sorted({pkg for need, pkg in packages.items() if not _present(need)})
    if not missing:
        return
    if os.geteuid() != 0:
        say(f"some tests need Debian packages {', '.join(missing)}; install them as root")
        return
    say(f"installing Debian packages: {', '.join(missing)}")
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=apt_env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=apt_env)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_listening(port: int, what: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while not _listening(port):
        if time.monotonic() > deadline:
            say(f"{what} did not start listening on 127.0.0.1:{port}")
            sys.exit(1)
        time.sleep(0.5)


def ensure_postgresql() -> None:
    """PostgreSQL on 127.0.0.1:5432 with trust for loopback and a database named after the
    user, as the postgres-marked tests and the scale-out setup expect; started (installed
    first, as root) when absent."""
    if _listening(5432):
        return
    if os.geteuid() != 0:
        say("the postgres tests need PostgreSQL on 127.0.0.1:5432; start it, or run as root")
        return
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        ensure_system_packages({"pg_ctlcluster": "postgresql"})
    version = sorted(Path("/etc/postgresql").iterdir())[-1].name
    hba = Path(f"/etc/postgresql/{version}/main/pg_hba.conf")
    trust = "host all all 127.0.0.1/32 trust\n"
    if trust not in hba.read_text():
        hba.write_text(trust + hba.read_text())  # first match wins: loopback trusted, for tests
    say(f"starting PostgreSQL {version}")
    run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start", check=False)
    _wait_listening(5432, "PostgreSQL")
    for database, owner in (("root", "root"), ("test", "root")):
        run("su", "postgres", "-c", f"createuser --superuser {owner}", check=False)
        run("su", "postgres", "-c", f"createdb --owner {owner} {database}", check=False)


def ensure_redis() -> None:
    """Redis on 127.0.0.1:6379 (Prefect's messaging for several API servers); started
    (installed first, as root) when absent. It keeps nothing on disk."""
    if _listening(6379):
        return
    if os.geteuid() != 0:
        say("the scale-out tests need Redis on 127.0.0.1:6379; start it, or run as root")
        return
    ensure_system_packages({"redis-server": "redis-server"})
    say("starting Redis")
    Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
    run(
        "redis-server",
        "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
        "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    )  # fmt: skip
    _wait_listening(6379, "Redis")


def project_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def demo(extra: list[str]) -> int:
    ensure_system_packages(SYSTEM_PACKAGES)
    env = project_env()
    tocsin = str(BIN / "tocsin")
    code = run(tocsin, "validate", "runbooks/", check=False, env=env)
    if code != 0:
        return code
    # The shipped office-compromise runbook, end to end in the sandbox, gates decided by a script.
    return run(tocsin, "demo", *extra, check=False, env=env)


TEST_PROCESSES = 2
"""pytest-xdist processes: most tests wait on servers and subprocesses, so two processes
(each with its own Prefect server) take the suite from about 20 to about 8 minutes on two
cores. Each test file stays in one process (its fakes start once)."""


ALONE = "alone"
"""The marker of the tests that start a whole distributed setup (two Prefect servers, two
workers, fifty flow-run processes): run after the others, by themselves, so that neither
slows the other past its time limits on two cores."""
NO_TESTS_COLLECTED = 5


def test(extra: list[str]) -> int:
    ensure_system_packages({**SYSTEM_PACKAGES, **TEST_SYSTEM_PACKAGES})
    ensure_postgresql()
    ensure_redis()
    pytest = [str(BIN / "python"), "-m", "pytest"]
    chosen = any(arg.startswith(("-n", "--numprocesses", "--dist")) for arg in extra)
    spread = [] if chosen else ["-n", str(TEST_PROCESSES), "--dist", "loadfile"]
    selecting = any(not arg.startswith("-") or arg in ("-m", "-k") for arg in extra)
    if selecting:  # some tests named or chosen: run just those, as asked
        return run(*pytest, *spread, *extra, check=False, env=project_env())
    code = run(*pytest, *spread, "-m", f"not {ALONE}", *extra, check=False, env=project_env())
    say(f"the tests marked {ALONE!r}, by themselves")
    alone = run(*pytest, "-n", "0", "-m", ALONE, *extra, check=False, env=project_env())
    return code or (0 if alone == NO_TESTS_COLLECTED else alone)


def lint(extra: list[str]) -> int:
    env = project_env()
    code = run(
        BIN / "ruff",
        "check",
        "tocsin",
        "flows",
        "integrations",
        "tests",
        "bench",
        "dev.py",
        check=False,
        env=env,
    )
    code |= run(
        BIN / "ruff",
        "format",
        "--check",
        "tocsin",
        "flows",
        "integrations",
        "tests",
        "bench",
        "dev.py",
        check=False,
        env=env,
    )
    code |= run(BIN / "mypy", "-p", "tocsin", check=False, env=env)
    return code


@contextlib.contextmanager
def set_up_on_stderr(wanted: bool) -> Iterator[None]:
    """While setting up, send what goes to stdout (ours and apt-get's) to stderr instead:
    `bench --json` keeps stdout for the JSON."""
    if not wanted:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def bench(extra: list[str]) -> int:
    with set_up_on_stderr("--json" in extra):
        ensure_system_packages(SYSTEM_PACKAGES)  # the audit benchmark renders a PDF report
        ensure_postgresql()  # the scale-out benchmark: PostgreSQL and Redis
        ensure_redis()
    return run(BIN / "python", ROOT / "bench" / "suite.py", *extra, check=False, env=project_env())


COMMANDS = {"demo": demo, "test": test, "lint": lint, "bench": bench}


def main() -> int:
    ensure_python()
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        return 2
    with set_up_on_stderr(sys.argv[1] == "bench" and "--json" in sys.argv[2:]):
        ensure_venv()
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
