"""A real POP3 server for tests: Debian's Dovecot (`apt-get install dovecot-pop3d`), run rootless by
an unprivileged user (`postgres` when the tests run as root, as for PostgreSQL), one mailbox."""

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from campaigns.stack import free_port

CONFIG = """protocols = pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/run
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
"""


class Pop3Server:
    def __init__(self, user: str = "bounces", password: str = "secret"):  # noqa: S107
        self.login, self.password, self.port = user, password, free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mab-pop3-"))
        self.run_as = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.maildir = self.dir / "mail" / user

    def start(self) -> "Pop3Server":
        account = pwd.getpwnam(self.run_as)
        for sub in ("run", "mail", f"mail/{self.login}/new", f"mail/{self.login}/cur", f"mail/{self.login}/tmp"):  # noqa: S108 (the Maildir's tmp/)
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "users").write_text(f"{self.login}:{{PLAIN}}{self.password}\n")
        (self.dir / "dovecot.conf").write_text(CONFIG.format(
            d=self.dir, user=self.run_as, group=self.run_as, uid=account.pw_uid, gid=account.pw_gid, port=self.port))
        self._chown()
        cmd = ["dovecot", "-c", str(self.dir / "dovecot.conf")]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        subprocess.run(cmd, check=True, timeout=30)  # noqa: S603
        self._wait()
        return self

    def deliver(self, name: str, raw: bytes) -> None:
        (self.maildir / "new" / name).write_bytes(raw)
        self._chown()

    def _chown(self) -> None:
        if os.geteuid() == 0:
            for path in [self.dir, *self.dir.rglob("*")]:
                shutil.chown(path, self.run_as, self.run_as)

    def _wait(self) -> None:
        import socket
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"dovecot did not listen: {(self.dir / 'dovecot.log').read_text()}")

    def url(self) -> str:
        return f"pop3://{self.login}:{self.password}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        pid_file = self.dir / "run" / "master.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 15)
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)
