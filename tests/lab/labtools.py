"""Helpers of the lab suite: the compose lab driven through docker-compose
(or `docker compose`), everything inside the containers reached with
`exec`, so that the tests never send a packet to a container address."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import BUILD, clean_env, sanitizer_build, wait_for  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
# The tests' image: its own tag, so that a user's iselab:lab (from
# build/lab) is left alone; kept between runs, rebuilt when its content
# label changes (deploy/build-images).
TEST_IMAGE = "iselab:test"
# Every project the tests make starts with this, then the pid of pytest.
PROJECT_PREFIX = "iselabtest"
NODE_DIR = "/var/lib/iselab/node"
# Fast keys and heartbeats: link loss shows within seconds.
LAB_ENV = {
    "ISE_LAB_IMAGE": TEST_IMAGE,
    "ISE_LAB_CA_KEY": "ec:p256",
    "ISE_LAB_HEARTBEAT_INTERVAL": "1s",
    "ISE_LAB_HEARTBEAT_TIMEOUT": "3s",
}
# Bounds of the waits, in seconds.
UP_TIMEOUT = 120      # compose up until every node is connected
LINK_TIMEOUT = 30     # a link state change or an alarm
EVENT_TIMEOUT = 30    # an event reaching the PSNs
CMD_TIMEOUT = 120     # one docker or compose command


def compose_base():
    """The Compose command: $ISE_LAB_COMPOSE, else docker-compose (what
    Debian packages), else the plugin (docker compose); None if neither."""
    forced = os.environ.get("ISE_LAB_COMPOSE")
    if forced:
        return forced.split()
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    p = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if p.returncode == 0:
        return ["docker", "compose"]
    return None


def docker_problem():
    """Why the compose lab cannot run here, or None."""
    if not shutil.which("docker"):
        return "docker is not installed"
    p = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        return f"no Docker engine answers (docker info: {(p.stderr or p.stdout).strip()[:200]})"
    if compose_base() is None:
        return "neither docker-compose nor the docker compose plugin is installed"
    return None


def sh(args, check=True, timeout=CMD_TIMEOUT, env=None, input=None):
    """Run a host command; check=True asserts exit 0 with its output."""
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                       env=clean_env({**LAB_ENV, **(env or {})}), input=input)
    if check:
        assert p.returncode == 0, f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


class ComposeLab:
    """One compose project of deploy/docker-compose.yml."""

    def __init__(self, project):
        self.project = project
        self.base = compose_base() + ["-p", project, "-f", str(COMPOSE_FILE)]

    def __call__(self, *args, check=True, timeout=CMD_TIMEOUT):
        return sh([*self.base, *args], check=check, timeout=timeout)

    def exec(self, service, *argv, check=True, timeout=CMD_TIMEOUT, input=None):
        # -T: no terminal (we read the output).
        p = sh([*self.base, "exec", "-T", service, *argv], check=False, timeout=timeout,
               input=input)
        if check:
            assert p.returncode == 0, (f"{service}: {' '.join(argv)} failed ({p.returncode}):\n"
                                       f"{p.stdout}\n{p.stderr}")
        return p

    def pan(self, *args, check=True):
        return self.exec("pan1", "pan", *args, "--data-dir", NODE_DIR, check=check)

    def member(self, service, *args, check=True):
        role = re.sub(r"\d+$", "", service)
        return self.exec(service, role, *args, "--data-dir", NODE_DIR, check=check)

    def container(self, service):
        cid = self("ps", "-q", service).stdout.strip()
        assert cid, f"no container for {service}"
        return cid

    def network(self):
        return f"{self.project}_lab"

    def logs(self, *services, tail=300):
        p = self("logs", "--no-color", "--tail", str(tail), *services, check=False)
        return p.stdout + p.stderr

    # -- the deployment, seen from pan1 ------------------------------------

    def node_states(self):
        p = self.pan("node", "list", check=False)
        if p.returncode != 0:
            return {}
        rows = {}
        for line in p.stdout.splitlines()[1:]:
            f = line.split()
            if len(f) >= 4:
                rows[f[0]] = f[3]
        return rows

    def wait_connected(self, nodes=("san1", "psn1", "psn2"), timeout=UP_TIMEOUT):
        def ok():
            s = self.node_states()
            return all(s.get(n) == "connected" for n in nodes)
        wait_for(ok, timeout, f"{', '.join(nodes)} connected in pan node list", interval=1,
                 detail=lambda: f"{self.node_states()}\n{self.logs()}")

    def event_seq(self):
        m = re.search(r"Event log:\s+(\d+) events", self.pan("status").stdout)
        assert m, self.pan("status").stdout
        return int(m.group(1))

    def member_events(self, service):
        p = self.member(service, "status", check=False)
        m = re.search(r"Events:\s+applied (\d+) of (\d+)", p.stdout)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def wait_events(self, service, timeout=EVENT_TIMEOUT):
        want = self.event_seq()

        def done():
            e = self.member_events(service)
            return e is not None and e[0] >= want
        wait_for(done, timeout, f"{service} to apply events up to {want}", interval=0.5,
                 detail=lambda: f"{self.member_events(service)}\n{self.logs(service)}")

    def cert_listed(self, serial):
        out = self.pan("cert", "list", check=False).stdout.lower()
        return serial.lower() in out

    def alarm_lines(self, name, node):
        out = self.pan("alarms").stdout
        return [ln for ln in out.splitlines()[1:] if name in ln and node in ln]

    # -- the endpoint --------------------------------------------------------

    def onboard(self, psn, retry_for=0):
        """lab-endpoint onboard PSN: (dir, serial) of the new certificate."""
        def attempt():
            p = self.exec("endpoint", "lab-endpoint", "onboard", psn, check=False)
            return p if p.returncode == 0 else None
        if retry_for:
            p = wait_for(attempt, retry_for, f"BYOD onboarding through {psn}", interval=2,
                         detail=lambda: self.exec("endpoint", "lab-endpoint", "onboard", psn,
                                                  check=False).stderr + self.logs(psn))
        else:
            p = self.exec("endpoint", "lab-endpoint", "onboard", psn)
        d = re.search(r"^dir=(\S+)$", p.stdout, re.M)
        s = re.search(r"^serial=([0-9A-Fa-f]+)$", p.stdout, re.M)
        assert d and s, p.stdout + p.stderr
        return d.group(1), s.group(1).lower()

    def ocsp(self, psn, d):
        p = self.exec("endpoint", "lab-endpoint", "ocsp", psn, d, check=False)
        m = re.search(r"^status=(\w+)", p.stdout, re.M)
        assert p.returncode == 0 and m, f"OCSP at {psn}:\n{p.stdout}\n{p.stderr}"
        return m.group(1)

    def reenroll(self, psn, d):
        p = self.exec("endpoint", "lab-endpoint", "reenroll", psn, d)
        m = re.search(r"^http=(\d+)", p.stdout, re.M)
        assert m, p.stdout + p.stderr
        return int(m.group(1)), p.stderr

    def down(self):
        p = self("down", "-v", "--remove-orphans", "--timeout", "5", check=False, timeout=300)
        # Volumes of services from other compose files (deploy/docker/psn3.yml)
        # that `down` did not know of.
        vols = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                               f"label=com.docker.compose.project={self.project}"],
                              capture_output=True, text=True, timeout=60).stdout.split()
        if vols:
            subprocess.run(["docker", "volume", "rm", "-f", *vols], capture_output=True,
                           timeout=120)
        return p


def leftover_projects():
    """Compose projects of earlier test runs whose pytest is gone."""
    names = []
    for what in (["ps", "-a"], ["volume", "ls"], ["network", "ls"]):
        p = subprocess.run(["docker", *what, "--format",
                            '{{.Label "com.docker.compose.project"}}'],
                           capture_output=True, text=True, timeout=60)
        names += p.stdout.split()
    found = set()
    for name in names:
        m = re.fullmatch(PROJECT_PREFIX + r"(\d+)", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            found.add(name)
    return sorted(found)


def build_image():
    """deploy/build-images from the build under test (quick when up to date)."""
    t0 = time.monotonic()
    p = sh([str(REPO / "deploy" / "build-images"), "--build-dir", str(BUILD), "--tag", TEST_IMAGE],
           check=False, timeout=600)
    assert p.returncode == 0, f"deploy/build-images failed:\n{p.stdout}\n{p.stderr}"
    return time.monotonic() - t0
