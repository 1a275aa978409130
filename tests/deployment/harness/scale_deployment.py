"""The deployment users run at catalogue scale, on loopback: PostgreSQL, Redis, CeleryExecutor, S3.

:class:`ScaleDeployment` is an :class:`AirflowDeployment` whose metadata database is PostgreSQL, whose
executor is Celery with a Redis broker, and whose tasks run on two Celery workers that share no local
disk (each its own AIRFLOW_HOME, working directory and TMPDIR). What both workers and the triggerer
must reach (catalogue chunks, manifests, outputs) lives on S3, served by moto's server mode.

The services come from Debian's ``postgresql`` and ``redis-server`` packages. When they are missing
:func:`ensure_debian_packages` installs them (``apt-get update`` once, then ``apt-get install``), so a
fresh machine and CI can run this; it raises :class:`ServicesUnavailable` (tests skip on it) only when
apt cannot install them. PostgreSQL runs as the ``postgres`` user when this process is root (it refuses
to run as root), from a data directory of its own, on a free loopback port.

    with scale_services() as services:
        with ScaleDeployment(tmp_path / "airflow", services=services, dags_folder=...) as af:
            ...
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deployment.harness.airflow_deployment import COMPONENTS, AirflowDeployment, Component, free_port
from tests.harness.processes import wait_until_listening
from tests.harness.s3 import aws_env, filesystem

PACKAGES = {"postgresql": "initdb", "redis-server": "redis-server"}
BUCKET = "chamelaion"
WORKERS = ("worker-1", "worker-2")


class ServicesUnavailable(RuntimeError):
    """PostgreSQL or Redis is not installed and apt could not install it."""


def _initdb() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return found[-1] if found else shutil.which("initdb")


def _missing_packages() -> list[str]:
    missing = []
    if _initdb() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def ensure_debian_packages() -> None:
    """Install Debian's ``postgresql`` and ``redis-server`` when missing (``apt-get update`` once)."""
    missing = _missing_packages()
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise ServicesUnavailable(f"{', '.join(missing)} missing and there is no apt-get to install them")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", *missing]):
        result = subprocess.run(
            [*prefix, *argv], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if result.returncode != 0:
            raise ServicesUnavailable(
                f"apt could not install {', '.join(missing)} ({' '.join(argv[1:3])} exited "
                f"{result.returncode}): {result.stderr.strip()[-500:]}"
            )
    if _missing_packages():
        raise ServicesUnavailable(f"apt installed nothing usable for {', '.join(_missing_packages())}")


@dataclass
class Services:
    postgres_port: int
    redis_port: int
    s3_port: int
    bucket: str = BUCKET

    @property
    def sql_alchemy_conn(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.postgres_port}/airflow"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def s3_env(self) -> dict[str, str]:
        return aws_env(self.s3_endpoint)

    def s3(self) -> Any:
        return filesystem(self.s3_endpoint)


class _Postgres:
    def __init__(self) -> None:
        initdb = _initdb()
        assert initdb is not None
        self.bin = Path(initdb).parent
        self.port = free_port()
        # Under /tmp, not pytest's tmp_path: PostgreSQL runs as its own user, which cannot enter root's
        # 0700 pytest directories.
        self.dir = Path(tempfile.mkdtemp(prefix="chamelaion-pg-"))
        self.data = self.dir / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self.as_user, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {result.returncode}: {result.stderr[-2000:]}")

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "airflow", "-A", "trust", "-E", "UTF8"
        )
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        self._run(
            str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "airflow"
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60
            )
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def scale_services(output_dir: Path) -> Iterator[Services]:
    """PostgreSQL, Redis and an S3 server (with an empty bucket) on free loopback ports, stopped on exit."""
    ensure_debian_packages()
    output_dir.mkdir(parents=True, exist_ok=True)
    postgres = _Postgres()
    processes: list[subprocess.Popen[bytes]] = []
    files = []
    try:
        postgres.start()
        redis_port, s3_port = free_port(), free_port()
        for name, argv in (
            (
                "redis",
                [
                    shutil.which("redis-server") or "redis-server",
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
            ),
            ("s3", [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)]),
        ):
            out = open(output_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed in finally, after the process)
            files.append(out)
            processes.append(
                subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            )
        wait_until_listening(redis_port, "redis-server", processes[0])
        wait_until_listening(s3_port, "moto_server", processes[1])
        services = Services(postgres.port, redis_port, s3_port)
        services.s3().mkdir(BUCKET)
        yield services
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        for file in files:
            file.close()
        postgres.stop()


class ScaleDeployment(AirflowDeployment):
    """API server, scheduler (CeleryExecutor), DAG processor, triggerer and two Celery workers.

    :param services: from :func:`scale_services`.
    :param worker_concurrency: task slots per Celery worker.
    """

    def __init__(
        self,
        home: Path,
        *,
        services: Services,
        dags_folder: Path,
        env: Mapping[str, str] | None = None,
        output_dir: Path | None = None,
        parallelism: int = 16,
        worker_concurrency: int = 4,
    ) -> None:
        self.services = services
        self.worker_concurrency = worker_concurrency
        super().__init__(
            home,
            dags_folder=dags_folder,
            output_dir=output_dir,
            parallelism=parallelism,
            env={
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": services.sql_alchemy_conn,
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{services.redis_port}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{services.postgres_port}/airflow",
                **services.s3_env(),
                **(env or {}),
            },
        )
        self.worker_homes = {name: home.parent / name for name in WORKERS}

    def start_worker(self, name: str) -> Component:
        """``airflow celery worker`` with its own AIRFLOW_HOME, working directory and TMPDIR."""
        worker_home = self.worker_homes[name]
        tmp = worker_home / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return self.start_component(
            name,
            env={
                "AIRFLOW_HOME": str(worker_home),
                "TMPDIR": str(tmp),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            },
            argv=[
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                str(self.worker_concurrency),
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=worker_home,
        )

    def start(self, components: Any = COMPONENTS) -> None:
        super().start(components)
        for name in WORKERS:
            self.start_worker(name)

    def _homes(self) -> set[str]:
        return {str(self.home), *(str(path) for path in self.worker_homes.values())}

    def pg(self) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.services.postgres_port, user="airflow", dbname="airflow"
        )

    def db_count(self, sql: str, *args: Any) -> int:
        con = self.pg()
        try:
            with con.cursor() as cur:
                cur.execute(sql, args)
                return int(cur.fetchone()[0])
        finally:
            con.close()

    def trigger_ids(self) -> set[int]:
        con = self.pg()
        try:
            with con.cursor() as cur:
                cur.execute("SELECT id FROM trigger")
                return {int(row[0]) for row in cur.fetchall()}
        finally:
            con.close()
