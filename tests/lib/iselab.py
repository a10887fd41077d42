"""Helpers for the integration tests: run the real executables on temp data
directories and check what they make with independent tools (openssl)."""

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BUILD = Path(os.environ.get("ISELAB_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))
PASSPHRASE = "correct horse battery staple"
# clean_env() gives every executable a test runs this: key files are
# encrypted with 1000 PBKDF2 iterations instead of 600000 (common/keys.h
# KEY_KDF_ITER_ENV).  The suite starts hundreds of processes, each loading
# keys, and at the default count PBKDF2 was most of its run time (about 85%
# under AddressSanitizer).  tests/unit/test_keys.c checks the default.
KDF_ITERATIONS = "1000"


def exe(role):
    """Path of a role executable (pan, san, psn) in the build tree."""
    return str(BUILD / role / role)


def sanitizer_build():
    """The b_sanitize of the build under test ("none" for a normal one)."""
    try:
        opts = json.loads((BUILD / "meson-info" / "intro-buildoptions.json").read_text())
    except OSError:
        return "none"
    for o in opts:
        if o["name"] == "b_sanitize":
            v = o["value"]
            return "none" if v in ("none", "", []) else str(v)
    return "none"


def run(args, env=None, check=None, timeout=120, input=None):
    """Run a command; returns CompletedProcess with text stdout/stderr.
    check=True asserts exit 0, check=False asserts non-zero, None: no check."""
    # None of the caller's ISELAB_* settings (passphrase, data dir,
    # configuration) may leak into a test.
    p = subprocess.run(args, env=clean_env(env), capture_output=True, text=True,
                       timeout=timeout, input=input)
    if check is True:
        assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    elif check is False:
        assert p.returncode != 0, f"{args} unexpectedly succeeded:\n{p.stdout}\n{p.stderr}"
    return p


def passphrase_file(tmp_path):
    f = tmp_path / "passphrase"
    if not f.exists():
        f.write_text(PASSPHRASE + "\n")
        f.chmod(0o600)
    return str(f)


def openssl(*args, check=True, input=None):
    return run(["openssl", *args], check=check, input=input)


def cert_text(path):
    return openssl("x509", "-in", str(path), "-noout", "-text").stdout


def cert_subject(path):
    out = openssl("x509", "-in", str(path), "-noout", "-subject", "-nameopt", "RFC2253").stdout
    return out.strip().removeprefix("subject=")


def cert_issuer(path):
    out = openssl("x509", "-in", str(path), "-noout", "-issuer", "-nameopt", "RFC2253").stdout
    return out.strip().removeprefix("issuer=")


def verify(cafile, cert, untrusted=None, purpose=None):
    """openssl verify -x509_strict; returns the CompletedProcess."""
    args = ["verify", "-x509_strict", "-CAfile", str(cafile)]
    if untrusted:
        args += ["-untrusted", str(untrusted)]
    if purpose:
        args += ["-purpose", purpose]
    return openssl(*args, str(cert), check=None)


def tree_snapshot(root):
    """{relative path: (mode, bytes)} of every file below root, to assert
    that a refused operation changed nothing."""
    snap = {}
    root = Path(root)
    if not root.exists():
        return snap
    for p in sorted(root.rglob("*")):
        if p.is_file():
            snap[str(p.relative_to(root))] = (stat.S_IMODE(p.stat().st_mode), p.read_bytes())
    return snap


def basic_constraints(text):
    m = re.search(r"X509v3 Basic Constraints:( critical)?[ \t]*\n\s+(.*)\n", text)
    return (m.group(1) is not None, m.group(2).strip()) if m else None


def key_usage(text):
    m = re.search(r"X509v3 Key Usage:( critical)?[ \t]*\n\s+(.*)\n", text)
    return (m.group(1) is not None, m.group(2).strip()) if m else None


# ---------------------------------------------------------------------------
# Running daemons (issue 3): nodes on their own loopback addresses, started
# and stopped with bounded waits, always cleaned up.
# ---------------------------------------------------------------------------

MESSAGING_PORT = 8671
EVENTS_PORT = 8672
# Short heartbeats so that link loss shows within seconds.
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 3.0
FAST_HEARTBEAT = ["--set", "heartbeat.interval=1s", "--set", "heartbeat.timeout=3s"]
# Bounds for every wait of the harness, in seconds.
START_TIMEOUT = 90.0        # daemon start until it answers (key decryption is slow under ASan on a loaded machine)
STOP_TIMEOUT = 20.0        # SIGTERM until exit
LINK_TIMEOUT = HEARTBEAT_TIMEOUT * 5 + 5   # a link state change to show
CA_KEY = "ec:p256"         # fast keys unless a test is about key types
LOG_TAIL_LINES = 300       # of a node's log printed when a test fails

# One lock file per loopback address, held while a test uses it, so that
# test modules run in parallel (and other build trees' runs) never collide.
ADDR_LOCK_DIR = Path(tempfile.gettempdir()) / "iselab-test-addresses"

JOIN_RE = re.compile(r"iselab1\.([0-9a-f]{16})\.([0-9a-f]{64})\.([0-9a-f]{64})@(\[[^\]]+\]|[^\s:@]+):(\d+)")


def clean_env(extra=None):
    """The environment for our executables: none of the caller's ISELAB_*
    settings (they would change configuration behind the test's back)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ISELAB_") or k == "ISELAB_BUILD_DIR"}
    env["ISELAB_KDF_ITERATIONS"] = KDF_ITERATIONS
    if extra:
        env.update(extra)
    return env


def wait_for(pred, timeout, what, interval=0.2, detail=None):
    """Poll pred() until it returns something true, at most timeout seconds.
    Returns that value; on timeout raises AssertionError naming what, with
    detail() (or the last value) to show why."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = detail() if detail else repr(value)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n{extra}")
        time.sleep(interval)


def _ports_free(ip, ports=(MESSAGING_PORT, EVENTS_PORT, 8084, 2560, 8443)):
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


class Address:
    """A loopback address held (by a lock file) for one test."""

    def __init__(self, ip, fd):
        self.ip, self._fd = ip, fd

    def endpoint(self, port=MESSAGING_PORT):
        return f"{self.ip}:{port}"

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __str__(self):
        return self.ip


def allocate_address():
    """A 127.0.x.y address that no other test holds and where nothing
    listens on the product's ports.  127.0.0.0/24 is left alone: the local
    lab (deploy/lab) and other services live there."""
    ADDR_LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
    start = secrets.randbelow(250)
    for second in range(1, 256):
        for i in range(253):
            last = 2 + (start + i) % 253
            ip = f"127.0.{second}.{last}"
            fd = os.open(ADDR_LOCK_DIR / ip, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if _ports_free(ip):
                return Address(ip, fd)
            os.close(fd)
    raise AssertionError("no free loopback address")


def _group_pids(pgid):
    """Pids of live (not zombie) processes in process group pgid."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat_line = (d / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
        fields = stat_line[stat_line.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(d.name))
    return pids


def _pid_names(pids):
    out = []
    for pid in pids:
        try:
            out.append(f"{pid} ({Path(f'/proc/{pid}/comm').read_text().strip()})")
        except OSError:
            out.append(str(pid))
    return ", ".join(out)


def tail(path, lines=LOG_TAIL_LINES):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"({path}: {e.strerror})"
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------
# Network namespaces: a real link between a node and the rest, to cut.
# ---------------------------------------------------------------------------

# Private /30 subnets for the veth pairs: 10.231.X.Y/30, host end .Y+1,
# namespace end .Y+2.  Out of the way of loopback, docker (172.16/12) and
# the usual LANs.
NETNS_NET = "10.231"
NETNS_PREFIX = "iselab-"   # of every namespace a test makes


def netns_unavailable():
    """Why network namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no ip(8) (iproute2)"
    name = f"{NETNS_PREFIX}probe-{os.getpid()}"
    p = run(["ip", "netns", "add", name])
    if p.returncode != 0:
        return f"ip netns add: {p.stderr.strip()}"
    run(["ip", "netns", "del", name])
    return None


class NetNs:
    """A network namespace joined to the host by a veth pair.

    A node run in it (Node.netns) reaches the host end's address (where
    the PAN listens) only through the pair.  cut() takes the host end
    down: packets are dropped, no RST, no FIN, the namespace end keeps its
    address and its route (flagged linkdown), so the node sees a dead
    network, not a closed port; heal() brings it up.  cut_direction()
    drops one direction only, with iptables in the namespace.  close()
    deletes the namespace, which deletes the pair and the rules with it."""

    def __init__(self):
        ADDR_LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
        self._fd = None
        start = secrets.randbelow(256 * 64)
        for i in range(256 * 64):
            n = (start + i) % (256 * 64)
            x, y = n // 64, (n % 64) * 4
            fd = os.open(ADDR_LOCK_DIR / f"netns-{NETNS_NET}.{x}.{y}", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            net = f"{NETNS_NET}.{x}.{y}"
            if run(["ip", "-4", "-o", "addr", "show", "to", f"{net}/30"]).stdout.strip():
                os.close(fd)   # in use by something that is not a test
                continue
            self._fd = fd
            break
        assert self._fd is not None, "no free /30 for a network namespace"
        tag = f"{x:02x}{y:02x}{secrets.token_hex(2)}"
        self.name = f"{NETNS_PREFIX}{tag}"
        self.host_if, self.peer_if = f"isl{tag}h", f"isl{tag}p"   # IFNAMSIZ: 15
        self.host = Address(f"{NETNS_NET}.{x}.{y + 1}", None)
        self.peer = Address(f"{NETNS_NET}.{x}.{y + 2}", None)
        self.made = False
        steps = [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if],
            ["ip", "link", "set", self.peer_if, "netns", self.name],
            ["ip", "addr", "add", f"{self.host}/30", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
            ["ip", "-n", self.name, "addr", "add", f"{self.peer}/30", "dev", self.peer_if],
            ["ip", "-n", self.name, "link", "set", self.peer_if, "up"],
            ["ip", "-n", self.name, "link", "set", "lo", "up"],
        ]
        try:
            for argv in steps:
                run(argv, check=True)
                self.made = True
        except BaseException:
            self.close()
            raise

    def prefix(self):
        """argv prefix that runs a command in the namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, args, **kw):
        """run() in the namespace."""
        return run(self.prefix() + list(args), **kw)

    def cut(self):
        run(["ip", "link", "set", self.host_if, "down"], check=True)

    def heal(self):
        run(["ip", "link", "set", self.host_if, "up"], check=True)

    # Smallest IP packet dropped by cut_direction(data_only=True): a bare
    # TCP ACK is 40 bytes, 52 with timestamps, 64 with one SACK block; a
    # segment of ZMTP over CURVE carries at least 35 bytes of payload.
    DATA_MIN_LEN = 70

    def cut_direction(self, to_ns=True, data_only=False):
        """Drop, with iptables in the namespace, what the host end sends
        into it (to_ns) or what it sends to the host end.  A plain drop
        soon stops the other direction too (its data is never acked, TCP
        backs off); data_only drops only segments that carry data, so
        bare ACKs pass and the other direction keeps flowing."""
        rule = ["INPUT", "-s", str(self.host)] if to_ns else ["OUTPUT", "-d", str(self.host)]
        if data_only:
            rule += ["-p", "tcp", "-m", "length", "--length", f"{self.DATA_MIN_LEN}:65535"]
        self.run(["iptables", "-I", *rule, "-j", "DROP"], check=True)

    def heal_direction(self):
        """Remove every rule cut_direction() added."""
        for chain in ("INPUT", "OUTPUT"):
            self.run(["iptables", "-F", chain], check=True)

    def close(self):
        """Delete the namespace and the pair; a note when that failed."""
        note = None
        if self.made:
            p = run(["ip", "netns", "del", self.name])
            # The pair goes with the namespace; its host end may outlive
            # it while a process still held the namespace open.
            if p.returncode != 0:
                note = f"ip netns del {self.name}: {p.stderr.strip()}"
            if run(["ip", "link", "show", self.host_if]).returncode == 0:
                run(["ip", "link", "del", self.host_if])
            self.made = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return note

    def __str__(self):
        return self.name


class Node:
    """One node (pan, psn or san) with its data directory; runs its
    subcommands and its daemon (`ROLE run`)."""

    role = None
    ready_args = ("status",)

    def __init__(self, lab, hostname, datadir=None):
        self.lab, self.hostname = lab, hostname
        self.datadir = Path(datadir) if datadir else lab.tmp / hostname
        self.passfile = passphrase_file(lab.tmp)
        self.proc = None
        self.out = None
        self.outpath = None
        self.starts = 0
        self.pgids = []   # of every start, to find what a killed daemon left
        self.run_args = list(FAST_HEARTBEAT)
        self.netns = None   # a NetNs the daemon runs in (`ip netns exec`)

    def __repr__(self):
        return f"<{self.role} {self.hostname} {self.datadir}>"

    @property
    def exe(self):
        return exe(self.role)

    @property
    def log_path(self):
        return self.datadir / "log" / f"{self.hostname}.log"

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cli(self, *args, check=None, timeout=60, env=None):
        """ROLE ARGS --data-dir D (admin subcommands need no passphrase)."""
        return run([self.exe, *args, "--data-dir", str(self.datadir)],
                   env=clean_env(env), check=check, timeout=timeout)

    def status(self, check=True):
        return self.cli("status", check=check)

    # -- daemon ------------------------------------------------------------

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, *extra, wait=True, timeout=START_TIMEOUT):
        assert not self.running, f"{self} already running"
        self.starts += 1
        self.outpath = self.lab.tmp / f"{self.hostname}-{self.datadir.name}-run{self.starts}.out"
        self.out = open(self.outpath, "wb")
        argv = [self.exe, "run", "--data-dir", str(self.datadir),
                "--passphrase-file", self.passfile, *self.run_args, *extra]
        if self.netns is not None:
            # `ip netns exec` execs the daemon: same pid, same group.
            argv = self.netns.prefix() + argv
        self.started_at = time.time()
        # Own process group: the daemon's children (CA signer, services)
        # can be found and killed whatever happens to the main process.
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, env=clean_env(),
                                     start_new_session=True)
        self.pgid = self.proc.pid
        self.pgids.append(self.pgid)
        if wait:
            self.wait_ready(timeout)
        return self

    def _fresh_control_socket(self):
        sock = self.datadir / "control.sock"
        try:
            st = sock.lstat()
        except OSError:
            return False
        # A stale socket of a killed daemon is older than this start.
        return stat.S_ISSOCK(st.st_mode) and st.st_ctime >= self.started_at - 1

    def wait_ready(self, timeout=START_TIMEOUT):
        """Until the daemon answers its readiness command on a control
        socket it created; fails at once if it exits."""
        last = [None]

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.role} run exited with {self.proc.returncode} "
                                     f"before answering:\n{self.diagnostics()}")
            if not self._fresh_control_socket():
                return False
            p = self.cli(*self.ready_args, timeout=15)
            last[0] = p
            return p.returncode == 0

        wait_for(ready, timeout, f"{self.role} run ({self.hostname}) to answer",
                 interval=0.1,
                 detail=lambda: (f"last answer: {last[0].stdout}{last[0].stderr}" if last[0]
                                 else "no control socket") + "\n" + self.diagnostics())

    def group_pids(self):
        """Live processes of the current daemon's process group."""
        return _group_pids(self.pgid) if self.proc else []

    def pids_named(self, comm):
        """Live processes of the daemon's group named comm
        (/proc/PID/comm: "ca-service", "ocsp-http"), sorted."""
        out = []
        for pid in self.group_pids():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                    out.append(pid)
            except OSError:
                pass
        return sorted(out)

    def leftover_pids(self):
        """Live processes of every start of this node."""
        return [pid for g in self.pgids for pid in _group_pids(g)]

    def stop(self, timeout=STOP_TIMEOUT, expect=0):
        """SIGTERM; the daemon and all its children must be gone in time
        and the main process must exit with expect."""
        assert self.running, f"{self} is not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"{self} did not exit within {timeout}s of SIGTERM\n"
                                 f"{self.diagnostics()}")
        try:
            wait_for(lambda: not self.group_pids(), 10, f"children of {self} to exit",
                     detail=lambda: _pid_names(self.group_pids()))
        except AssertionError:
            self.kill_group()
            raise
        finally:
            self._close_out()
        assert rc == expect, f"{self} exited with {rc} on SIGTERM, not {expect}\n{self.diagnostics()}"
        return rc

    def kill(self):
        """SIGKILL the main process only, as a crash would; its children
        are left to notice (see kill_group)."""
        assert self.running, f"{self} is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_out()

    def kill_group(self):
        """SIGKILL the daemon and every process of its group."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while self.leftover_pids() and time.monotonic() < deadline:
            for pid in self.leftover_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        self._close_out()

    def _close_out(self):
        if self.out:
            self.out.close()
            self.out = None

    def cleanup(self):
        """Teardown: a polite SIGTERM, then SIGKILL for whatever is left.
        Returns a note when something had to be killed."""
        if self.proc is None:
            return None
        note = None
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT / 2)
            except subprocess.TimeoutExpired:
                note = f"{self} ignored SIGTERM at teardown; killed"
        left = self.leftover_pids()
        if left:
            time.sleep(0.5)
            left = self.leftover_pids()
            if left:
                note = (note or "") + f" {self}: killed leftover processes {_pid_names(left)}"
        self.kill_group()
        return note

    def diagnostics(self):
        parts = [f"==== {self} log {self.log_path} (last {LOG_TAIL_LINES} lines) ====",
                 tail(self.log_path)]
        for f in sorted(self.lab.tmp.glob(f"{self.hostname}-{self.datadir.name}-run*.out")):
            parts += [f"==== {f.name} (stdout/stderr of run) ====", tail(f)]
        return "\n".join(parts)


class JoinString:
    """iselab1.<token-id>.<secret>.<pan-curve-public-hex>@<host>:<port>"""

    def __init__(self, text):
        m = JOIN_RE.search(text)
        assert m, f"no join string in {text!r}"
        self.text = m.group(0)
        self.token_id, self.secret, self.pan_key, self.host, self.port = m.groups()
        self.port = int(self.port)

    def replace(self, **kw):
        new = JoinString(self.text)
        for k, v in kw.items():
            setattr(new, k, v)
        return new

    def __str__(self):
        return f"iselab1.{self.token_id}.{self.secret}.{self.pan_key}@{self.host}:{self.port}"


_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def z85_decode(s):
    """ZeroMQ RFC 32 Z85 to bytes."""
    s = s.strip()
    assert len(s) % 5 == 0, s
    out = bytearray()
    for i in range(0, len(s), 5):
        v = 0
        for c in s[i:i + 5]:
            v = v * 85 + _Z85.index(c)
        out += v.to_bytes(4, "big")
    return bytes(out)


def parse_table(text, first_column):
    """Rows of a table printed with a header line starting with
    first_column: a list of (fields, line), fields split on white space."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.split()[:1] == [first_column]:
            return [(ln.split(), ln) for ln in lines[i + 1:] if ln.strip()]
    raise AssertionError(f"no table with a {first_column} column in:\n{text}")


NODE_LIST_COLUMNS = ["HOSTNAME", "ROLE", "SESSION-SERVICES", "STATE", "LAST-HEARTBEAT", "CERT-EXPIRY",
                     "SYNC"]


class Pan(Node):
    role = "pan"
    ready_args = ("node", "list")

    def __init__(self, lab, hostname="pan1", datadir=None, address=None):
        super().__init__(lab, hostname, datadir)
        self.address = address or lab.address()
        # The OCSP responder of the upper levels on the PAN's own address
        # too (it would follow --listen anyway; said here for clarity).
        self.run_args = ["--listen", self.address.endpoint(MESSAGING_PORT),
                         "--events-listen", self.address.endpoint(EVENTS_PORT),
                         "--set", f"ocsp.listen={self.address.ip}:2560", *FAST_HEARTBEAT]

    def init(self, *extra, hierarchy=None, ca_key=CA_KEY):
        args = [self.exe, "init", "--hostname", self.hostname, "--data-dir", str(self.datadir),
                "--passphrase-file", self.passfile, "--ca-key", ca_key, *extra]
        if hierarchy:
            args += ["--ocsp-hierarchy", hierarchy]
        run(args, env=clean_env(), check=True)
        return self

    @property
    def curve_public_hex(self):
        return z85_decode((self.datadir / "curve.pub").read_text()).hex()

    def node_add(self, host, role="psn", *extra, ttl=None, session=None):
        args = ["node", "add", host, "--role", role, *extra]
        if ttl:
            args += ["--ttl", ttl]
        if session:
            args += ["--session-services", session]
        p = self.cli(*args, check=True)
        return JoinString(p.stdout)

    def node_list(self):
        """{hostname: fields} and the raw text; a host listed twice fails."""
        p = self.cli("node", "list", check=True)
        rows = {}
        if "HOSTNAME" not in p.stdout:
            return rows   # no node yet: a table or a "no nodes" line
        for fields, line in parse_table(p.stdout, "HOSTNAME"):
            assert fields[0] not in rows, f"{fields[0]} listed twice:\n{p.stdout}"
            rows[fields[0]] = fields
        return rows

    def node_state(self, host):
        row = self.node_list().get(host)
        return row[3] if row else None

    def wait_state(self, host, state, timeout=LINK_TIMEOUT):
        return wait_for(lambda: self.node_state(host) == state, timeout,
                        f"{host} to be {state} in pan node list",
                        detail=lambda: self.cli("node", "list").stdout + "\n" + self.diagnostics())

    def alarms(self, all=False):
        return self.cli("alarms", *(["--all"] if all else []), check=True).stdout

    def user_add(self, name, password, check=True):
        """`pan user add`: the password on stdin, never in argv."""
        return run([self.exe, "user", "add", name, "--data-dir", str(self.datadir)],
                   env=clean_env(), input=password + "\n", check=check)

    def template_add(self, label, *opts, check=True):
        return self.cli("template", "add", label, *opts, check=check)

    def event_seq(self):
        """The newest event in the PAN's log (`pan status`)."""
        p = self.cli("status", check=True)
        m = re.search(r"Event log:\s+(\d+) events", p.stdout)
        assert m, p.stdout
        return int(m.group(1))

    def ca_certs(self, pem=False):
        return self.cli("ca", "certs", *(["--pem"] if pem else []), check=True).stdout

    def cert_count(self):
        """The store's certificate count from `pan status`, or None when
        the status does not print it."""
        p = self.cli("status", check=True)
        m = re.search(r"(\d+) certificates? issued", p.stdout)
        return int(m.group(1)) if m else None

    def snapshot(self):
        """What a refused operation must not change: the node list (host,
        role, session services, state), the CA tree and the certificate count."""
        rows = {h: tuple(f[:4]) for h, f in self.node_list().items()}
        return {"nodes": rows, "ca certs": self.ca_certs(), "count": self.cert_count()}


class Joiner(Node):
    """A psn or san: join, then run."""

    def join(self, join_string, hostname=None, check=None, timeout="60s", ca_key=CA_KEY,
             proc_timeout=180, extra=()):
        args = [self.exe, "join", "--join", str(join_string),
                "--hostname", hostname or self.hostname, "--data-dir", str(self.datadir),
                "--passphrase-file", self.passfile, "--ca-key", ca_key,
                "--timeout", timeout, *extra]
        return run(args, env=clean_env(), check=check, timeout=proc_timeout)

    def join_popen(self, join_string, timeout="120s", ca_key=CA_KEY):
        """Start a join without waiting (concurrency tests); output in files."""
        self.join_out = self.lab.tmp / f"{self.hostname}-{self.datadir.name}-join.out"
        f = open(self.join_out, "wb")
        args = [self.exe, "join", "--join", str(join_string), "--hostname", self.hostname,
                "--data-dir", str(self.datadir), "--passphrase-file", self.passfile,
                "--ca-key", ca_key, "--timeout", timeout]
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             env=clean_env(), start_new_session=True)
        f.close()
        self.lab.children.append(p)
        return p

    @property
    def joined(self):
        return (self.datadir / "node.conf").exists()


def member_events(node):
    """(applied, known) from a running member's `status`, or None."""
    p = node.cli("status", check=None)
    m = re.search(r"Events:\s+applied (\d+) of (\d+)", p.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else None


def wait_events(node, pan, timeout=LINK_TIMEOUT):
    """Until the member applied every event the PAN has now."""
    want = pan.event_seq()

    def done():
        e = member_events(node)
        return e is not None and e[0] >= want
    return wait_for(done, timeout, f"{node.hostname} to apply events up to {want}",
                    detail=lambda: str(member_events(node)) + "\n" + node.diagnostics())


class Psn(Joiner):
    role = "psn"

    def __init__(self, lab, hostname, datadir=None, address=None, netns=None):
        super().__init__(lab, hostname, datadir)
        # `psn run` starts the EST server: on this node's own address, so
        # that PSNs of parallel tests never share 8084.  In a NetNs the
        # node's address is the namespace's end of the pair.
        self.netns = netns
        self.address = address or (netns.peer if netns else lab.address())
        self.run_args += ["--set", f"est.listen={self.address.ip}:8084",
                          "--set", f"provisioning.listen={self.address.ip}:8443",
                          "--set", f"ocsp.listen={self.address.ip}:2560"]

    def wait_events(self, pan, timeout=LINK_TIMEOUT):
        return wait_events(self, pan, timeout)


class San(Joiner):
    role = "san"

    def __init__(self, lab, hostname, datadir=None):
        super().__init__(lab, hostname, datadir)
        # Its own address: a SAN listens (it answers "not primary", and
        # serves as the primary once promoted).  --set, which both of its
        # modes take.
        self.address = lab.address()
        self.run_args += ["--set", f"messaging.listen={self.address.endpoint(MESSAGING_PORT)}",
                          "--set", f"events.listen={self.address.endpoint(EVENTS_PORT)}",
                          "--set", f"ocsp.listen={self.address.ip}:2560"]

    def wait_events(self, pan, timeout=LINK_TIMEOUT):
        return wait_events(self, pan, timeout)

    def node_add_string(self, host, role="psn"):
        """`san node add` on a promoted SAN: its join string."""
        return JoinString(self.cli("node", "add", host, "--role", role, check=True).stdout)


class Lab:
    """The nodes and addresses of one test; close() leaves nothing behind."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.nodes = []
        self.addresses = []
        self.children = []   # bare Popen objects (concurrent joins)
        self.namespaces = []  # NetNs objects, deleted after the nodes
        self.halts = []       # stop a test's client threads, first of all

    def on_close(self, halt):
        """halt() is called first at close(), also when the test failed:
        client threads still running at interpreter exit can crash it."""
        self.halts.append(halt)

    def address(self):
        a = allocate_address()
        self.addresses.append(a)
        return a

    def pan(self, hostname="pan1", hierarchy=None, ca_key=CA_KEY, start=True, init=True, **kw):
        n = Pan(self, hostname, **kw)
        self.nodes.append(n)
        if init:
            n.init(hierarchy=hierarchy, ca_key=ca_key)
        if start:
            n.start()
        return n

    def psn(self, hostname="psn1", datadir=None, netns=None):
        n = Psn(self, hostname, datadir, netns=netns)
        self.nodes.append(n)
        return n

    def netns(self):
        """A NetNs deleted at close(), after the nodes."""
        ns = NetNs()
        self.namespaces.append(ns)
        return ns

    def san(self, hostname="san1", datadir=None):
        n = San(self, hostname, datadir)
        self.nodes.append(n)
        return n

    def close(self, failed):
        notes = []
        for halt in reversed(self.halts):
            try:
                halt()
            except Exception as e:  # noqa: BLE001 (teardown goes on)
                notes.append(f"halting a client: {e!r}")
        for p in self.children:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)
        # Joining nodes first, the PAN last: fewer link errors in the logs.
        for n in sorted(self.nodes, key=lambda n: n.role == "pan"):
            note = n.cleanup()
            if note:
                notes.append(note)
        for ns in self.namespaces:
            note = ns.close()
            if note:
                notes.append(note)
        for a in self.addresses:
            a.release()
        if failed or notes:
            for note in notes:
                print("teardown:", note)
            for n in self.nodes:
                print(n.diagnostics())


@pytest.fixture
def lab(tmp_path, request):
    """A Lab for one test; on failure every node's log is printed."""
    lab = Lab(tmp_path)
    failed_before = request.session.testsfailed
    try:
        yield lab
    finally:
        lab.close(request.session.testsfailed > failed_before)


# -- certificates ------------------------------------------------------------

def ext_key_usage(text):
    m = re.search(r"X509v3 Extended Key Usage:( critical)?[ \t]*\n\s+(.*)\n", text)
    return (m.group(1) is not None, m.group(2).strip()) if m else None


def aia_ocsp(text):
    return re.findall(r"OCSP - URI:(\S+)", text)


def has_ocsp_nocheck(text):
    return re.search(r"OCSP No Check:", text) is not None


def subject_alt_names(text):
    m = re.search(r"X509v3 Subject Alternative Name:( critical)?[ \t]*\n\s+(.*)\n", text)
    return [s.strip() for s in m.group(2).split(",")] if m else []


def cert_serial(path):
    out = openssl("x509", "-in", str(path), "-noout", "-serial").stdout
    return out.strip().split("=", 1)[1].lower()


def split_pem(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n?", text, re.S)


def find_zlint():
    """zlint from PATH, $GOBIN, $(go env GOPATH)/bin or ~/go/bin, or None
    (as tests/pki/check-profiles.sh finds it)."""
    z = shutil.which("zlint")
    if z:
        return z
    cands = []
    if os.environ.get("GOBIN"):
        cands.append(Path(os.environ["GOBIN"]) / "zlint")
    if shutil.which("go"):
        p = run(["go", "env", "GOPATH"])
        if p.returncode == 0 and p.stdout.strip():
            cands.append(Path(p.stdout.strip()) / "bin" / "zlint")
    cands.append(Path.home() / "go" / "bin" / "zlint")
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


# Same judged sources and accepted list as tests/pki/check-profiles.sh.
ZLINT_FAIL_SOURCES = "RFC5280,RFC3279,RFC5480,RFC8813,RFC5891"
ZLINT_ACCEPTED = set()


def zlint_findings(path):
    """warn/error/fatal findings of the RFC lints on one PEM certificate,
    as ["lint:result", ...]; None when zlint is not installed."""
    z = find_zlint()
    if z is None:
        return None
    p = run([z, "-includeSources", ZLINT_FAIL_SOURCES, str(path)], check=True)
    report = json.loads(p.stdout)
    return [f"{name}:{r['result']}" for name, r in sorted(report.items())
            if isinstance(r, dict) and r.get("result") in ("warn", "error", "fatal")
            and name not in ZLINT_ACCEPTED]


def private_key_secrets(path, passphrase=PASSPHRASE):
    """Byte strings that any copy of the key at path would contain: its
    unencrypted PKCS#8 DER and its raw private value."""
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-passin", "pass:" + passphrase,
                          "-outform", "DER"], capture_output=True, timeout=60)
    assert der.returncode == 0, der.stderr
    text = openssl("pkey", "-in", str(path), "-passin", "pass:" + passphrase,
                   "-noout", "-text").stdout
    out = [der.stdout]
    m = re.search(r"(?:priv|privateExponent):\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
    assert m, f"no private value in openssl's text of {path}"
    raw = bytes.fromhex(re.sub(r"[\s:]", "", m.group(1))).lstrip(b"\0")
    assert len(raw) >= 16
    out.append(raw)
    return out


def files_below(root):
    return [p for p in sorted(Path(root).rglob("*")) if p.is_file() and not p.is_symlink()]
