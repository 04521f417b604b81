#!/usr/bin/env python3
"""The class server: one MLflow tracking server and one DVC remote for a whole class, on one Debian machine.

    export CLASS_DB_PASSWORD=... MLFLOW_AUTH_ADMIN_PASSWORD=... MLFLOW_FLASK_SERVER_SECRET_KEY=...
    sudo -E .venv/bin/python deploy/class_server.py up --home /srv/mlops-class --roster roster.txt
    .venv/bin/python deploy/class_server.py health --home /srv/mlops-class
    sudo .venv/bin/python deploy/class_server.py backup --home /srv/mlops-class --to /backups/2026-12-01
    sudo .venv/bin/python deploy/class_server.py down --home /srv/mlops-class [--purge]

What ``up`` starts (everything on ``--host``, loopback by default; instructors/class_server.md has the why):

- **PostgreSQL** (Debian's ``postgresql``): a cluster of its own under ``<home>/pgdata``, run by an
  unprivileged service user (PostgreSQL refuses root), password login only. Two databases: ``mlflow`` (runs,
  metrics, registry) and ``mlflow_auth`` (accounts and permissions).
- **MLflow** ``mlflow server --app-name basic-auth``: the backend store in PostgreSQL, artifacts proxied by the
  server (``--serve-artifacts``) into ``<home>/artifacts``, so students need no storage credentials. A new
  resource belongs to its creator; ``default_permission = NO_PERMISSIONS`` means nobody else can read it. The
  instructor is MLflow's admin and reads everything.
- **OpenSSH** ``sshd`` on its own port and config: one Unix account per student, SFTP only, keys only, each
  student's DVC remote ``<home>/dvc/<student>`` readable by that student alone.
- Per student, ``<home>/accounts/<student>/``: ``class.env`` (what to export before starting Jupyter), the
  student's SSH key and ``ssh_config`` (the block for ~/.ssh/config that points DVC at that key). Only root
  can read that folder: hand each student their own.

Secrets come from the environment only: ``CLASS_DB_PASSWORD`` (the database role),
``MLFLOW_AUTH_ADMIN_PASSWORD`` (MLflow's own variable for its first admin) and ``MLFLOW_FLASK_SERVER_SECRET_KEY``
(MLflow's key for the login pages' CSRF tokens; the same across workers and restarts). MLflow 3.17 ships no default admin
password; ``health`` also proves that the admin's login works and an anonymous request is refused.
"""
from __future__ import annotations

import argparse
import configparser
import csv
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import asdict, dataclass, field
from pathlib import Path

SECRETS = ("CLASS_DB_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
MIN_SECRET_LENGTH = 12
USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")  # a portable Unix login name (useradd's own rule)
BIN = Path(sys.executable).parent  # mlflow, uvicorn: the environment that runs this script


class ClassServerError(RuntimeError):
    """A step of the class server failed; the message says which and what to do."""


@dataclass
class Settings:
    """Where and how the class server runs; ``up`` saves it as ``<home>/class.json`` for the other commands."""

    home: Path
    name: str = "mlops-class"           # prefix of the Unix service user and the students' group
    host: str = "127.0.0.1"
    db_port: int = 5432
    mlflow_port: int = 5000
    ssh_port: int = 2222
    workers: int = 2
    admin: str = "instructor"
    students: list[str] = field(default_factory=list)

    @property
    def service_user(self) -> str:
        return f"{self.name}-svc"

    @property
    def students_group(self) -> str:
        return f"{self.name}-students"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def db_uri(self, database: str) -> str:  # the password comes from PGPASSWORD, never the command line
        return f"postgresql+psycopg2://mlflow@{self.host}:{self.db_port}/{database}"

    def path(self, *parts: str) -> Path:
        return self.home.joinpath(*parts)

    def save(self) -> None:
        data = asdict(self) | {"home": str(self.home)}
        self.path("class.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, home: Path) -> Settings:
        saved = home / "class.json"
        if not saved.is_file():
            raise ClassServerError(f"{saved} not found: run `class_server.py up --home {home}` first")
        data = json.loads(saved.read_text())
        return cls(**(data | {"home": Path(data["home"])}))


# ---------------------------------------------------------------------------------------------- helpers
def read_secrets(environ=os.environ) -> dict[str, str]:
    """The two secrets from the environment; refuse to start without them or with a short one."""
    missing = [name for name in SECRETS if not environ.get(name)]
    if missing:
        raise ClassServerError(f"set {' and '.join(missing)} in the environment (no default password exists)")
    short = [name for name in SECRETS if len(environ[name]) < MIN_SECRET_LENGTH]
    if short:
        raise ClassServerError(f"{', '.join(short)} must have at least {MIN_SECRET_LENGTH} characters")
    return {name: environ[name] for name in SECRETS}


def read_roster(path: Path) -> list[str]:
    """Student login names, one per line or in a CSV's ``username`` column; each a valid Unix name, once."""
    text = path.read_text()
    if text.lstrip().lower().startswith("username"):
        names = [row["username"].strip() for row in csv.DictReader(text.splitlines())]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return validate_students(names)


def validate_students(names: list[str]) -> list[str]:
    bad = [name for name in names if not USERNAME.match(name)]
    if bad:
        raise ClassServerError(f"not valid login names (lower case, digits, - and _): {bad}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ClassServerError(f"students listed twice: {repeated}")
    return names


def run(command: list[str], *, user: str | None = None, env: dict | None = None, check=True) -> str:
    """Run ``command`` (as ``user`` through runuser when given); raise with its output on failure."""
    if user and user != pwd.getpwuid(os.getuid()).pw_name:
        command = ["runuser", "-u", user, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if check and done.returncode != 0:
        raise ClassServerError(f"{' '.join(command[:6])} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout


def postgres_bin(tool: str) -> str:
    """A PostgreSQL server program: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(tool) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"))), None)
    if not found:
        raise ClassServerError(f"{tool} not found: install PostgreSQL (Debian: apt-get install postgresql)")
    return str(found)


def wait_for(check, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise ClassServerError(f"{what} not ready after {timeout:.0f} s")


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def ensure_group(name: str) -> None:
    if run(["getent", "group", name], check=False) == "":
        run(["groupadd", "--system", name])


def ensure_user(name: str, *, home: Path, group: str | None = None, system=False) -> None:
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    command = ["useradd", "--home-dir", str(home), "--create-home", "--shell", "/usr/sbin/nologin"]
    command += ["--system"] if system else []
    command += ["--gid", group] if group else ["--user-group"]
    run([*command, name])
    run(["usermod", "--password", "*", name])  # no password login, yet not "locked" (sshd refuses locked accounts)


def owned_dir(path: Path, user: str, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    account = pwd.getpwnam(user)
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(mode)
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        raise ClassServerError("run as root (sudo -E): the class server creates one Unix account per student "
                               "for the DVC remote and runs PostgreSQL as a service user")


# ---------------------------------------------------------------------------------------------- PostgreSQL
def start_postgres(settings: Settings, db_password: str) -> None:
    svc, data = settings.service_user, settings.path("pgdata")
    env = {"PGPASSWORD": db_password}
    if not (data / "PG_VERSION").exists():
        owned_dir(data, svc, 0o700)
        password_file = owned_dir(settings.path("run"), svc, 0o700) / "initdb.pw"
        password_file.write_text(db_password + "\n")
        shutil.chown(password_file, svc)
        try:
            run([postgres_bin("initdb"), "-D", str(data), "-U", "mlflow", f"--pwfile={password_file}",
                 "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--encoding=UTF8"], user=svc)
        finally:
            password_file.unlink()
    owned_dir(settings.path("run"), svc, 0o700)
    options = f"-c listen_addresses={settings.host} -p {settings.db_port} -k {settings.path('run')}"
    run([postgres_bin("pg_ctl"), "-D", str(data), "-l", str(settings.path("logs", "postgres.log")),
         "-o", options, "-w", "-t", "60", "start"], user=svc)
    for database in ("mlflow", "mlflow_auth"):
        exists = run([postgres_bin("psql"), "-h", settings.host, "-p", str(settings.db_port), "-U", "mlflow",
                      "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{database}'"],
                     env=env).strip()
        if exists != "1":
            run([postgres_bin("createdb"), "-h", settings.host, "-p", str(settings.db_port), "-U", "mlflow",
                 database], env=env)


def postgres_ready(settings: Settings) -> bool:
    done = subprocess.run([postgres_bin("pg_isready"), "-q", "-h", settings.host, "-p", str(settings.db_port)], check=False)
    return done.returncode == 0


def stop_postgres(settings: Settings) -> None:
    if (settings.path("pgdata", "postmaster.pid")).exists():
        run([postgres_bin("pg_ctl"), "-D", str(settings.path("pgdata")), "-m", "fast", "-w", "stop"],
            user=settings.service_user, check=False)


# ---------------------------------------------------------------------------------------------- MLflow
def write_auth_config(settings: Settings) -> Path:
    """MLflow's basic-auth settings: no secret in the file (the admin password comes from the environment)."""
    config = configparser.ConfigParser()
    config["mlflow"] = {
        "default_permission": "NO_PERMISSIONS",  # a student's experiments and models are their own
        "database_uri": settings.db_uri("mlflow_auth"),
        "admin_username": settings.admin,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        # A checked password is trusted for 60 s per worker: without it every request pays a PBKDF2 hash.
        # The cost: a changed password may still work for up to 60 s on the other worker.
        "auth_cache_ttl_seconds": "60",
    }
    path = settings.path("basic_auth.ini")
    with path.open("w") as handle:
        config.write(handle)
    return path


def mlflow_runs_as(settings: Settings) -> str:
    """The service user when it can execute this environment's mlflow, else the invoking user (a virtual
    environment inside a private folder, as in a CI clone under mktemp -d, is out of the service user's reach)."""
    me = pwd.getpwuid(os.getuid()).pw_name
    if os.geteuid() != 0:
        return me
    probe = subprocess.run(["runuser", "-u", settings.service_user, "--", str(BIN / "python"), "-c",
                            "import mlflow.server"], capture_output=True, check=False)
    return settings.service_user if probe.returncode == 0 else me


def mlflow_command(settings: Settings) -> list[str]:
    return [str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
            "--backend-store-uri", settings.db_uri("mlflow"),
            "--serve-artifacts", "--artifacts-destination", str(settings.path("artifacts")),
            "--host", settings.host, "--port", str(settings.mlflow_port), "--workers", str(settings.workers)]


def start_mlflow(settings: Settings, found_secrets: dict[str, str]) -> int:
    """Start the tracking server in its own session; return its pid once /health answers."""
    user = mlflow_runs_as(settings)
    owned_dir(settings.path("artifacts"), user, 0o700)
    env = {**os.environ, "PGPASSWORD": found_secrets["CLASS_DB_PASSWORD"],
           "MLFLOW_AUTH_ADMIN_PASSWORD": found_secrets["MLFLOW_AUTH_ADMIN_PASSWORD"],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": found_secrets["MLFLOW_FLASK_SERVER_SECRET_KEY"],
           "MLFLOW_AUTH_CONFIG_PATH": str(write_auth_config(settings)),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = mlflow_command(settings)
    if user != pwd.getpwuid(os.getuid()).pw_name:
        command = ["runuser", "-u", user, "--", *command]
    log = settings.path("logs", "mlflow.log").open("ab")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=settings.home,
                               start_new_session=True)
    settings.path("run", "mlflow.pid").write_text(f"{process.pid}\n")
    try:
        wait_for(lambda: process.poll() is None and http_status(settings.url + "/health") == 200
                 or process.poll() is not None, "the MLflow server")
    finally:
        log.close()
    if process.poll() is not None:
        tail = settings.path("logs", "mlflow.log").read_text()[-1500:]
        raise ClassServerError(f"the MLflow server exited ({process.returncode}):\n{tail}")
    return process.pid


def stop_mlflow(settings: Settings, timeout: float = 30) -> None:
    """SIGTERM to the server's session (uvicorn finishes the requests it has), SIGKILL after ``timeout``."""
    pid_file = settings.path("run", "mlflow.pid")
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a child of ours that exited but was not reaped yet is not alive
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def restart_mlflow(settings: Settings) -> int:
    stop_mlflow(settings)
    return start_mlflow(settings, read_secrets())


# ---------------------------------------------------------------------------------------------- SSH remote
SSHD_CONFIG = """\
# The class DVC remote: its own sshd, keys only, SFTP only, students only.
ListenAddress {host}
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
AllowGroups {group}
DisableForwarding yes
PermitTTY no
Subsystem sftp internal-sftp
ForceCommand internal-sftp -u 0077
"""


def sshd_path() -> str:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"  # /usr/sbin is not on every user's PATH
    if not Path(sshd).exists():
        raise ClassServerError("sshd not found: install OpenSSH's server (Debian: apt-get install openssh-server)")
    return sshd


def start_sshd(settings: Settings) -> None:
    ssh = owned_dir(settings.path("ssh"), "root", 0o700)
    host_key = ssh / "ssh_host_ed25519_key"
    if not host_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{settings.name} host", "-f", str(host_key)])
    config = ssh / "sshd_config"
    config.write_text(SSHD_CONFIG.format(host=settings.host, port=settings.ssh_port, host_key=host_key,
                                         pid_file=settings.path("run", "sshd.pid"), group=settings.students_group))
    sshd = sshd_path()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder (systemd makes it)
    run([sshd, "-t", "-f", str(config)])  # a wrong config fails here with sshd's own message
    run([sshd, "-f", str(config), "-E", str(settings.path("logs", "sshd.log"))])
    wait_for(lambda: port_answers(settings.host, settings.ssh_port), "sshd", timeout=30)


def stop_sshd(settings: Settings) -> None:
    pid_file = settings.path("run", "sshd.pid")
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_for(lambda: not pid_file.exists() or not port_answers(settings.host, settings.ssh_port), "sshd stop",
                 timeout=10)


# ---------------------------------------------------------------------------------------------- accounts
def add_students(settings: Settings, students: list[str], admin_password: str) -> None:
    """Per student: a Unix account for the DVC remote, an SSH key, a remote folder and an MLflow account."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    ensure_group(settings.students_group)
    dvc_root = owned_dir(settings.path("dvc"), "root", 0o711)  # students may enter, not list
    homes, accounts = settings.path("homes"), owned_dir(settings.path("accounts"), "root", 0o700)
    homes.mkdir(exist_ok=True)
    os.environ.update({"MLFLOW_TRACKING_USERNAME": settings.admin, "MLFLOW_TRACKING_PASSWORD": admin_password})
    auth = AuthServiceClient(settings.url)
    for student in students:
        ensure_user(student, home=homes / student, group=settings.students_group)
        settings.students = sorted(set(settings.students) | {student})  # down --purge removes what exists
        folder = owned_dir(accounts / student, "root", 0o700)
        key = folder / "id_ed25519"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{student}@{settings.name}", "-f", str(key)])
        ssh_dir = owned_dir(homes / student / ".ssh", student, 0o700)
        (ssh_dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
        shutil.chown(ssh_dir / "authorized_keys", student, settings.students_group)
        owned_dir(dvc_root / student, student, 0o700)
        env_file = folder / "class.env"
        if not env_file.exists():  # a second `up` keeps every password it handed out
            password = secrets.token_urlsafe(18)
            try:
                auth.create_user(student, password)
            except MlflowException as error:
                raise ClassServerError(f"MLflow account {student}: {error.message}") from error
            env_file.write_text(student_env(settings, student, password))
            env_file.chmod(0o600)
        (folder / "ssh_config").write_text(student_ssh_config(settings, student))


def student_env(settings: Settings, student: str, password: str) -> str:
    return (f"# {student}'s settings for the class server: export them before starting Jupyter.\n"
            f"export MLFLOW_TRACKING_URI={settings.url}\n"
            f"export MLFLOW_TRACKING_USERNAME={student}\n"
            f"export MLFLOW_TRACKING_PASSWORD={password}\n"
            f"export MLOPS_LAB_DVC_REMOTE=ssh://{student}@{settings.host}:{settings.ssh_port}"
            f"{settings.path('dvc', student)}\n")


def student_ssh_config(settings: Settings, student: str, key: str = "~/.ssh/{name}_ed25519") -> str:
    """The block a student adds to ~/.ssh/config: DVC's SSH client (asyncssh) reads it, in every clone too
    (a key named in a repository's .dvc/config.local would not travel with `git clone`)."""
    return (f"# {student} on the class DVC remote: append to ~/.ssh/config, with this folder's id_ed25519 saved "
            f"as {key.format(name=settings.name)}\n"
            f"Host {settings.host}\n    Port {settings.ssh_port}\n    User {student}\n"
            f"    IdentityFile {key.format(name=settings.name)}\n")


def read_student_env(settings: Settings, student: str) -> dict[str, str]:
    """A student's ``class.env`` as a dict (what their shell would export)."""
    text = settings.path("accounts", student, "class.env").read_text()
    pairs = (line[len("export "):].split("  #")[0].split("=", 1) for line in text.splitlines()
             if line.startswith("export "))
    return {name: value for name, value in pairs}


def remove_students(settings: Settings) -> None:
    for student in settings.students:
        run(["userdel", "--remove", student], check=False)
    run(["groupdel", settings.students_group], check=False)


# ---------------------------------------------------------------------------------------------- commands
def up(settings: Settings, students: list[str]) -> Settings:
    """Start PostgreSQL, MLflow and sshd (each only if not running) and add ``students``; save settings."""
    require_root()
    found = read_secrets()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.home.chmod(0o755)
    ensure_user(settings.service_user, home=settings.path("service"), system=True)
    owned_dir(settings.path("logs"), settings.service_user, 0o750)
    if not postgres_ready(settings):
        start_postgres(settings, found["CLASS_DB_PASSWORD"])
    if http_status(settings.url + "/health") != 200:
        start_mlflow(settings, found)
    if not port_answers(settings.host, settings.ssh_port):
        start_sshd(settings)
    add_students(settings, students, found["MLFLOW_AUTH_ADMIN_PASSWORD"])
    settings.save()
    return settings


def health(settings: Settings, admin_password: str | None = None) -> list[tuple[str, bool, str]]:
    """Every part, checked from outside as a student's client would reach it: (check, ok, detail)."""
    checks = [("PostgreSQL accepts connections", postgres_ready(settings), f"{settings.host}:{settings.db_port}"),
              ("MLflow answers /health", http_status(settings.url + "/health") == 200, settings.url)]
    anonymous = http_status(settings.url + "/api/2.0/mlflow/experiments/search?max_results=1")
    checks.append(("MLflow refuses an anonymous request", anonymous == 401, f"HTTP {anonymous}"))
    if admin_password:
        admin = http_status(settings.url + "/api/2.0/mlflow/experiments/search?max_results=1",
                            (settings.admin, admin_password))
        checks.append((f"MLflow accepts {settings.admin}'s login", admin == 200, f"HTTP {admin}"))
    banner = _ssh_banner(settings)
    checks.append(("sshd answers (DVC remote)", banner.startswith("SSH-2.0-"), banner or "no answer"))
    free = shutil.disk_usage(settings.home).free / 2**30
    checks.append(("disk space for artifacts and DVC data", free > 1, f"{free:.1f} GiB free"))
    return checks


def _ssh_banner(settings: Settings) -> str:
    try:
        with socket.create_connection((settings.host, settings.ssh_port), timeout=2) as sock:
            return sock.recv(256).decode(errors="replace").strip()
    except OSError:
        return ""


def down(settings: Settings, purge: bool = False) -> None:
    """Stop everything; ``purge`` also deletes the accounts, the database and every file under ``home``."""
    require_root()
    stop_mlflow(settings)
    stop_sshd(settings)
    stop_postgres(settings)
    if purge:
        remove_students(settings)
        run(["userdel", settings.service_user], check=False)
        shutil.rmtree(settings.home, ignore_errors=True)


def backup(settings: Settings, target: Path) -> list[Path]:
    """pg_dump of both databases (custom format: pg_restore reads it) and tar archives of the artifacts and
    the DVC remote. Runs while the server serves; a run logged during the backup may be in one and not the other."""
    target.mkdir(parents=True, exist_ok=True)
    env = {"PGPASSWORD": read_secrets()["CLASS_DB_PASSWORD"]}
    written = []
    for database in ("mlflow", "mlflow_auth"):
        out = target / f"{database}.dump"
        run([postgres_bin("pg_dump"), "-h", settings.host, "-p", str(settings.db_port), "-U", "mlflow",
             "-Fc", "-f", str(out), database], env=env)
        written.append(out)
    for folder in ("artifacts", "dvc", "accounts"):
        out = target / f"{folder}.tar.gz"
        run(["tar", "-czf", str(out), "-C", str(settings.home), folder])
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "health", "down", "backup"])
    parser.add_argument("--home", type=Path, default=Path("/srv/mlops-class"))
    parser.add_argument("--roster", type=Path, help="up: student login names, one per line (or a CSV's username)")
    parser.add_argument("--host", default="127.0.0.1", help="up: the address to serve on (loopback by default)")
    parser.add_argument("--db-port", type=int, default=5432)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--ssh-port", type=int, default=2222)
    parser.add_argument("--workers", type=int, default=2, help="up: MLflow server worker processes")
    parser.add_argument("--purge", action="store_true", help="down: delete accounts, databases and files")
    parser.add_argument("--to", type=Path, help="backup: the folder to write the dumps and archives into")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    try:
        if args.command == "up":
            settings = Settings.load(home) if (home / "class.json").exists() else Settings(
                home, host=args.host, db_port=args.db_port, mlflow_port=args.mlflow_port,
                ssh_port=args.ssh_port, workers=args.workers)
            up(settings, read_roster(args.roster) if args.roster else [])
            print(f"class server up: MLflow {settings.url}, DVC remote ssh://{settings.host}:{settings.ssh_port}, "
                  f"{len(settings.students)} students (accounts in {settings.path('accounts')})")
            return 0
        settings = Settings.load(home)
        if args.command == "health":
            results = health(settings, os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"))
            for check, ok, detail in results:
                print(f"{'ok  ' if ok else 'FAIL'} {check}: {detail}")
            return 0 if all(ok for _, ok, _ in results) else 1
        if args.command == "down":
            down(settings, purge=args.purge)
            return 0
        if not args.to:
            raise ClassServerError("backup needs --to FOLDER")
        for path in backup(settings, args.to):
            print(path)
        return 0
    except ClassServerError as error:
        print(f"class_server: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
