"""The local process lab (deploy/lab) as a user runs it, in a directory of
its own (ISE_LAB_DIR) with this build's executables (ISE_LAB_BUILD): up,
registration by deploy/register-node.sh, the demo user and the demo
endpoint that up onboards and checks, every copy-paste command up prints
(curl cacerts and simpleenroll, openssl ocsp, strongSwan pki), up again
changing nothing, a BYOD enrollment through psn1, a revocation on the PAN
reaching both PSNs (events applied, the EST server refusing the
certificate), down, and up again keeping the deployment.

The lab's addresses are fixed (127.0.0.11-22): when anything listens there
(a user's own lab), the test skips rather than disturb it."""

import fcntl
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labtools import REPO, sanitizer_build  # noqa: E402
from iselab import (ADDR_LOCK_DIR, BUILD, _ports_free, cert_serial, clean_env, exe, openssl,  # noqa: E402
                    run, split_pem, wait_for)

LAB = REPO / "deploy" / "lab"
ONBOARD = REPO / "deploy" / "byod-onboard.sh"
ADDRS = {"pan1": "127.0.0.11", "san1": "127.0.0.12", "psn1": "127.0.0.21", "psn2": "127.0.0.22"}
USER = "alice"  # deploy/lab's demo enrollment user
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
    lab.env = env
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
    pw = lab.dir / "demo" / "password"
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


def printed_commands(out):
    """The copy-paste commands of the "Try" section of up's summary: one
    per line, comments start with '#'."""
    lines = out[out.index("\nTry ("):].splitlines()[2:]
    return [ln.strip() for ln in lines if ln.startswith("  ") and not ln.strip().startswith("#")]


def user_events(lab):
    """The user-set events in the PAN's log (the log also carries the
    replica's certificates, node records and alarms, which move on their
    own: a heartbeat, an outbox delivery)."""
    return re.findall(r"event \d+: user-set \S+", (lab.dir / "pan1" / "log" / "pan1.log").read_text())


def cert_count(lab):
    """Certificates on the PAN once both PSNs delivered what they issued."""
    for psn in ("psn1", "psn2"):
        wait_for(lambda: re.search(r"Outbox:\s+0 certificates", run(
            [exe("psn"), "status", "--data-dir", str(lab.dir / psn)], env=clean_env()).stdout),
            TIMEOUT, f"{psn}'s outbox to drain")
    return len(re.findall(r"^[0-9A-Fa-f]{2,}\s", pan(lab, "cert", "list", "--limit", "1000").stdout,
                          re.M))


def run_printed(lab, cmd):
    p = run(["bash", "-c", f"set -o pipefail; {cmd}"], env=lab.env, timeout=120)
    assert p.returncode == 0, f"printed command failed ({p.returncode}):\n{cmd}\n{p.stdout}\n{p.stderr}"
    return p


def check_printed_commands(lab, out):
    """Run what up told the user to paste, in order, and check each result
    with openssl: the commands must work as printed."""
    root = lab.dir / "pan1" / "ca" / "root-ca.crt"
    try_dir = lab.dir / "try"
    cmds = printed_commands(out)
    kinds = ["cacerts", "csr", "simpleenroll", "ocsp", "base64-line-length", "pki --estca",
             "pki --est "]
    assert len(cmds) == len(kinds), "\n".join(cmds)
    for cmd, kind in zip(cmds, kinds):
        assert kind in cmd, (kind, cmd)
    have_pki = shutil.which("pki") is not None
    if not have_pki and os.environ.get("CI"):
        pytest.fail("strongSwan's pki is missing (deploy/install-deps installs strongswan-pki)")
    for cmd, kind in zip(cmds, kinds):
        if kind.startswith("pki") and not have_pki:
            continue
        p = run_printed(lab, cmd)
        if kind == "cacerts":
            for cn in ("Endpoint Sub CA - psn1", "Node CA - pan1", "Root CA - pan1"):
                assert f"subject=CN = Certificate Services {cn}" in p.stdout, p.stdout
        elif kind == "simpleenroll":
            assert "subject=CN = alice" in p.stdout, p.stdout
            openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(root),
                    "-untrusted", str(lab.dir / "psn1" / "ca" / "chain.pem"),
                    "-untrusted", str(lab.dir / "psn1" / "ca" / "endpoint-sub-ca.crt"),
                    str(try_dir / "device.crt"), check=True)
        elif kind == "ocsp":
            assert "Response verify OK" in p.stdout + p.stderr, p.stdout + p.stderr
            assert re.search(r"device\.crt: good", p.stdout), p.stdout
        elif kind == "pki --estca":
            got = "".join(f.read_text() for f in sorted(try_dir.glob("pki-ca*.pem")))
            names = [openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253",
                             input=pem).stdout for pem in split_pem(got)]
            assert any("Endpoint Sub CA - psn2" in n for n in names), names
        elif kind == "pki --est ":
            certs = split_pem(p.stdout)
            assert certs, p.stdout + p.stderr
            crt = try_dir / "pki-device.crt"
            crt.write_text(certs[0])
            openssl("verify", "-x509_strict", "-CAfile", str(root), "-untrusted",
                    str(lab.dir / "psn2" / "ca" / "chain.pem"), "-untrusted",
                    str(lab.dir / "psn2" / "ca" / "endpoint-sub-ca.crt"), str(crt), check=True)


def test_local_lab_core_scenario(local_lab, tmp_path):
    lab = local_lab
    out = lab("up").stdout
    wait_connected(lab)
    deployment = re.search(r"Deployment:\s+([0-9a-f]{32})", pan(lab, "status").stdout).group(1)
    # Registered by deploy/register-node.sh: each node has its own data.
    for n in ("san1", "psn1", "psn2"):
        assert (lab.dir / n / "node.conf").exists()

    # up's summary: where things run, the trust anchor, the demo user's
    # credentials (0600, never printed), the demo endpoint checked over OCSP.
    root = lab.dir / "pan1" / "ca" / "root-ca.crt"
    password = lab.dir / "demo" / "password"
    for ip, ports in (("127.0.0.11", "8671 messaging, 8672 events(, 2560 OCSP)?"),
                      ("127.0.0.21", "8084 EST, 8443 BYOD portal, 2560 OCSP"),
                      ("127.0.0.22", "8084 EST, 8443 BYOD portal, 2560 OCSP")):
        assert re.search(rf"{ip}\s+{ports}\s+running, pid \d+", out), out
    assert f"Trust anchor:   {root}" in out, out
    assert f"Demo user:      {USER}, password in {password}" in out, out
    assert "openssl verify: OK; OCSP at psn1: good (response verified)" in out, out
    assert password.stat().st_mode & 0o777 == 0o600
    assert password.read_text().strip() not in out
    assert "alice" in pan(lab, "user", "list").stdout
    demo_crt = lab.dir / "demo" / "endpoint" / "device.crt"
    openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(root), "-untrusted",
            str(lab.dir / "demo" / "endpoint" / "chain.pem"), str(demo_crt), check=True)
    demo_serial = cert_serial(demo_crt)

    # up again: nothing new (no user event, no second onboarding).
    users, certs = user_events(lab), cert_count(lab)
    assert users, "no user-set event in the PAN's log"
    again = lab("up").stdout
    assert "enrollment user alice exists (kept)" in again, again
    assert "demo endpoint already onboarded" in again, again
    assert user_events(lab) == users
    assert cert_count(lab) == certs
    assert cert_serial(demo_crt) == demo_serial

    # Every command the summary prints works as printed.
    check_printed_commands(lab, out)
    wait_connected(lab)

    # The demo user reaches both PSNs; BYOD through psn1 with its password.
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
