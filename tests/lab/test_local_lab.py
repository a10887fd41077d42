"""The local process lab (deploy/lab) as a user runs it, in a directory of
its own (ISE_LAB_DIR) with this build's executables (ISE_LAB_BUILD): up,
registration by deploy/register-node.sh, a BYOD enrollment through psn1,
a revocation on the PAN reaching both PSNs (events applied, the EST server
refusing the certificate), down, and up again keeping the deployment.

The lab's addresses are fixed (127.0.0.11-22): when anything listens there
(a user's own lab), the test skips rather than disturb it."""

import fcntl
import os
import re
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labtools import REPO, sanitizer_build  # noqa: E402
from iselab import (ADDR_LOCK_DIR, BUILD, _ports_free, cert_serial, clean_env, exe, openssl,  # noqa: E402
                    run, wait_for)

LAB = REPO / "deploy" / "lab"
ONBOARD = REPO / "deploy" / "byod-onboard.sh"
ADDRS = {"pan1": "127.0.0.11", "san1": "127.0.0.12", "psn1": "127.0.0.21", "psn2": "127.0.0.22"}
USER, PASSWORD = "alice", "local-lab-password-1"
TIMEOUT = 60


@pytest.fixture
def local_lab(tmp_path):
    if sanitizer_build() != "none":
        pytest.skip("the local lab runs a normal build, not this sanitizer build")
    # One local lab at a time on this machine, whichever build tree runs it.
    ADDR_LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
    fd = os.open(ADDR_LOCK_DIR / "local-lab", os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pytest.skip("another test run uses the local lab's addresses right now")
    busy = [f"{n} {ip}" for n, ip in ADDRS.items() if not _ports_free(ip)]
    if busy:
        os.close(fd)
        pytest.skip(f"the local lab's addresses are in use ({', '.join(busy)}): "
                    f"a lab of yours is running? (deploy/lab down)")
    d = tmp_path / "lab"
    env = {"ISE_LAB_DIR": str(d), "ISE_LAB_BUILD": str(BUILD), "ISE_LAB_CA_KEY": "ec:p256"}

    def lab(*args, check=True):
        p = run([str(LAB), *args], env=env, timeout=300)
        if check:
            assert p.returncode == 0, f"deploy/lab {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
        return p
    lab.dir = d
    try:
        yield lab
    finally:
        lab("down", "--purge", check=False)
        # Whatever deploy/lab could not stop (a failed test's leftovers).
        for pidfile in d.glob("*/run.pid") if d.exists() else []:
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        os.close(fd)


def pan(lab, *args, check=True, input=None):
    p = run([exe("pan"), *args, "--data-dir", str(lab.dir / "pan1")], env=clean_env(),
            input=input, timeout=60)
    if check:
        assert p.returncode == 0, f"pan {' '.join(args)}:\n{p.stdout}\n{p.stderr}"
    return p


def node_states(lab):
    out = pan(lab, "node", "list").stdout
    return {ln.split()[0]: ln.split()[3] for ln in out.splitlines()[1:] if len(ln.split()) > 3}


def wait_connected(lab):
    want = {"san1": "connected", "psn1": "connected", "psn2": "connected"}
    wait_for(lambda: node_states(lab) == want, TIMEOUT, "every node connected",
             interval=0.5, detail=lambda: pan(lab, "node", "list").stdout)


def wait_events(lab, psn):
    want = int(re.search(r"Event log:\s+(\d+) events", pan(lab, "status").stdout).group(1))

    def done():
        p = run([exe("psn"), "status", "--data-dir", str(lab.dir / psn)], env=clean_env())
        m = re.search(r"Events:\s+applied (\d+) of (\d+)", p.stdout)
        return m and int(m.group(1)) >= want and m.group(1) == m.group(2)
    wait_for(done, TIMEOUT, f"{psn} to apply every event up to {want}",
             detail=lambda: run([exe("psn"), "status", "--data-dir", str(lab.dir / psn)]).stdout)


def onboard(lab, tmp_path, psn, mac):
    root = lab.dir / "pan1" / "ca" / "root-ca.crt"
    pw = tmp_path / "password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    out = tmp_path / f"byod-{psn}-{mac.replace(':', '')}"

    def attempt():
        p = run([str(ONBOARD), "--portal", f"https://{psn}:8443", "--cacert", str(root),
                 "--user", USER, "--mac", mac, "--password-file", str(pw), "--out", str(out),
                 "--resolve", f"{psn}:8443:{ADDRS[psn]}"], timeout=90)
        attempt.last = p
        return p.returncode == 0
    wait_for(attempt, TIMEOUT, f"BYOD onboarding through {psn}", interval=1,
             detail=lambda: attempt.last.stdout + attempt.last.stderr)
    return out


def reenroll(lab, tmp_path, psn, d):
    """EST simplereenroll at psn with the certificate in d: the HTTP status."""
    crt, key = d / "device.crt", d / "device.key"
    subj = openssl("x509", "-in", str(crt), "-noout", "-subject", "-nameopt",
                   "RFC2253").stdout.strip().removeprefix("subject=")
    san = openssl("x509", "-in", str(crt), "-noout", "-ext", "subjectAltName").stdout
    san = "".join(san.splitlines()[1:]).replace(" ", "")
    csr = tmp_path / "reenroll.der"
    openssl("req", "-new", "-key", str(key), "-subj", f"/{subj}", "-addext",
            f"subjectAltName={san}", "-outform", "DER", "-out", str(csr))
    b64 = tmp_path / "reenroll.b64"
    openssl("base64", "-in", str(csr), "-out", str(b64))
    p = run(["curl", "-sS", "--max-time", "30", "--resolve", f"{psn}:8084:{ADDRS[psn]}",
             "--cacert", str(lab.dir / "pan1" / "ca" / "root-ca.crt"),
             "--cert", str(crt), "--key", str(key), "-H", "Content-Type: application/pkcs10",
             "--data-binary", f"@{b64}", "-o", str(tmp_path / "reenroll.body"),
             "-w", "%{http_code}", f"https://{psn}:8084/.well-known/est/simplereenroll"],
            timeout=60)
    assert p.returncode == 0, p.stderr
    return int(p.stdout), (tmp_path / "reenroll.body").read_text(errors="replace")


def ocsp_status(lab, tmp_path, psn, d):
    """openssl ocsp at psn's responder for the certificate in d."""
    chain = (d / "chain.pem").read_text()
    issuer = tmp_path / "issuer.pem"
    issuer.write_text(chain[:chain.index("-----END CERTIFICATE-----") + 26])
    p = openssl("ocsp", "-issuer", str(issuer), "-cert", str(d / "device.crt"),
                "-url", f"http://{ADDRS[psn]}:2560/ocsp", "-CAfile",
                str(lab.dir / "pan1" / "ca" / "root-ca.crt"), "-verify_other",
                str(d / "chain.pem"), "-timeout", "10", check=None)
    assert p.returncode == 0 and "Response verify OK" in p.stdout + p.stderr, p.stdout + p.stderr
    m = re.search(r"device\.crt: (\w+)", p.stdout)
    assert m, p.stdout
    return m.group(1)


def test_local_lab_core_scenario(local_lab, tmp_path):
    lab = local_lab
    out = lab("up").stdout
    assert "Trust anchor" in out, out
    wait_connected(lab)
    deployment = re.search(r"Deployment:\s+([0-9a-f]{32})", pan(lab, "status").stdout).group(1)
    # Registered by deploy/register-node.sh: each node has its own data.
    for n in ("san1", "psn1", "psn2"):
        assert (lab.dir / n / "node.conf").exists()

    # An enrollment user on the PAN reaches both PSNs; BYOD through psn1.
    pan(lab, "user", "add", USER, input=PASSWORD + "\n")
    for psn in ("psn1", "psn2"):
        wait_events(lab, psn)
    d = onboard(lab, tmp_path, "psn1", "02:00:00:00:00:01")
    serial = cert_serial(d / "device.crt")
    wait_for(lambda: serial in pan(lab, "cert", "list").stdout.lower(), TIMEOUT,
             f"{serial} in pan cert list", detail=lambda: pan(lab, "cert", "list").stdout)

    # Good before, refused after the revocation reached the PSNs.
    code, body = reenroll(lab, tmp_path, "psn1", d)
    assert code == 200, body
    assert ocsp_status(lab, tmp_path, "psn1", d) == "good"
    pan(lab, "cert", "revoke", serial, "--reason", "keyCompromise")
    for psn in ("psn1", "psn2"):
        wait_events(lab, psn)
    code, body = reenroll(lab, tmp_path, "psn1", d)
    assert code == 403, body
    assert ocsp_status(lab, tmp_path, "psn1", d) == "revoked"

    # down stops every process; up brings back the same deployment.
    lab("down")
    for n in ADDRS:
        pid = int((lab.dir / n / "run.pid").read_text()) if (lab.dir / n / "run.pid").exists() else None
        if pid:
            assert not Path(f"/proc/{pid}").exists() or \
                Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", f"{n} still runs"
    lab("up")
    wait_connected(lab)
    assert deployment in pan(lab, "status").stdout
    revoked = pan(lab, "cert", "list", "--status", "revoked").stdout.lower()
    assert serial in revoked, revoked
