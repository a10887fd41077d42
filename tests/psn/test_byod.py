"""BYOD onboarding through the PSN's provisioning service (docs/byod.md):
`psn run` forks provisioning (the node's EST client and the portal on
8443); deploy/byod-onboard.sh plays the endpoint with openssl and curl;
openssl, zlint, the PSN's store and `pan cert list` judge the
certificate.  Then every kind of bad input, each refused with nothing
stored, and the EST server down: a clear 503 from the portal, the alarm on
the PAN, and BYOD back by itself with the alarm cleared once EST is."""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_est_psn as est  # noqa: E402  (a module: pytest does not re-collect its tests)
from iselab import (cert_serial, cert_subject, cert_text, clean_env, lab, openssl,  # noqa: E402,F401
                    run, split_pem, subject_alt_names, tail, wait_for)

REPO = Path(__file__).resolve().parents[2]
ONBOARD = REPO / "deploy" / "byod-onboard.sh"
PORTAL_PORT = 8443
USER, PASSWORD = "alice", "alice-password-1"
MAC = "AA-BB-CC-00-11-22"          # as a user types it; the portal normalises
MAC_HEX = "aabbcc001122"
MAC_URI = "URI:urn:dev:mac:" + MAC_HEX
ALARM = "EST Client CA Certificates Retrieval Failed"
SUBJECTS = [est.SUB_CA_CN, est.NODE_CA_CN, est.ROOT_CN]


def start_byod(lab):
    """A joined PSN under `psn run`, its portal on its own address, and an
    enrollment user defined on the PAN and replicated to the PSN."""
    pan, psn = est.joined_psn(lab)
    # The portal is not configured: by default it listens on est.listen's
    # address (the harness gives each PSN its own), port 8443.  A short
    # retry, so that recovery shows within seconds.
    psn.run_args += ["--set", "provisioning.retry-interval=2s",
                     "--set", "log.level=debug"]
    pan.user_add(USER, PASSWORD)
    psn.start()
    wait_for(lambda: est.tcp_listening(psn.address.ip, PORTAL_PORT), est.START_TIMEOUT,
             "the BYOD portal to listen on 8443", detail=psn.log_text)
    psn.wait_events(pan)
    return pan, psn


def onboard(lab, psn, user=USER, mac=MAC, password=PASSWORD, name="dev"):
    out = lab.tmp / f"byod-{name}"
    p = run(["sh", str(ONBOARD), "--portal", f"https://psn1:{PORTAL_PORT}",
             "--cacert", str(psn.datadir / "ca/root-ca.crt"), "--user", user, "--mac", mac,
             "--resolve", f"psn1:{PORTAL_PORT}:{psn.address.ip}", "--out", str(out)],
            env=clean_env({"BYOD_PASSWORD": password}), timeout=120)
    return p, out


class Portal:
    """curl against https://psn1:8443 on the PSN's address."""

    def __init__(self, lab, psn):
        self.lab, self.psn, self.n = lab, psn, 0

    def request(self, path, body=None, ctype="application/json", method=None):
        self.n += 1
        out = self.lab.tmp / f"portal-{self.n}.body"
        hdrs = self.lab.tmp / f"portal-{self.n}.hdrs"
        argv = ["curl", "-sS", "--max-time", "60",
                "--resolve", f"psn1:{PORTAL_PORT}:{self.psn.address.ip}",
                "--cacert", str(self.psn.datadir / "ca/root-ca.crt"),
                "-o", str(out), "-D", str(hdrs), "-w", "%{http_code}"]
        if method:
            argv += ["-X", method]
        if body is not None:
            src = self.lab.tmp / f"portal-{self.n}.req"
            src.write_bytes(body if isinstance(body, bytes) else body.encode())
            argv += ["--data-binary", f"@{src}"]
            if ctype is not None:
                argv += ["-H", f"Content-Type: {ctype}"]
        argv.append(f"https://psn1:{PORTAL_PORT}{path}")
        p = run(argv, timeout=90)
        assert p.returncode == 0, f"curl {path}: {p.stderr}"
        return int(p.stdout), hdrs.read_text(errors="replace"), out.read_bytes()

    def enroll(self, **fields):
        return self.request("/byod/enroll", json.dumps(fields))


def error_of(body):
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    return doc["error"]


def make_csr(lab, name, cn=USER, san=MAC_URI, key="ec:P-256"):
    """A PEM CSR made by openssl, as an endpoint would."""
    keyf, csr = lab.tmp / f"{name}.key", lab.tmp / f"{name}.csr"
    args = ["req", "-new", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{key[3:]}",
            "-nodes", "-keyout", str(keyf), "-subj", f"/CN={cn}", "-out", str(csr)]
    if san:
        args += ["-addext", f"subjectAltName={san}"]
    openssl(*args)
    return csr.read_text()


def good(lab, name, **over):
    f = {"username": USER, "password": PASSWORD, "mac": MAC, "csr": make_csr(lab, name)}
    f.update(over)
    return f


def store_certs(psn):
    return est.mdb_dump(psn, "certs")


def check_certificate(lab, psn, pan, out):
    """The onboarded certificate as a RADIUS server and the PAN see it."""
    cert = out / "device.crt"
    serial = est.check_issued(lab, psn, cert, USER, queued=False)
    assert subject_alt_names(cert_text(cert)) == [MAC_URI]
    chain = split_pem((out / "chain.pem").read_text())
    subjects = []
    for i, c in enumerate(chain):
        f = lab.tmp / f"chain{i}.pem"
        f.write_text(c)
        subjects.append(cert_subject(f))
    assert subjects == SUBJECTS
    # The key the endpoint made is the one certified, and it stays private.
    pub_cert = openssl("x509", "-in", str(cert), "-noout", "-pubkey").stdout
    pub_key = openssl("pkey", "-in", str(out / "device.key"), "-pubout").stdout
    assert pub_cert == pub_key
    assert (out / "device.key").stat().st_mode & 0o077 == 0
    serial = cert_serial(cert)
    wait_for(lambda: serial in pan.cli("cert", "list", "--node", "psn1", check=True).stdout.lower(),
             30, "the BYOD certificate to reach the PAN", detail=psn.log_text)
    return serial


def test_byod_onboarding_and_bad_input(lab):
    pan, psn = start_byod(lab)
    st = psn.status().stdout
    assert re.search(r"^Provisioning Service\s+running\s+\d+", st, re.M), st

    # The endpoint onboards with the script.
    p, out = onboard(lab, psn)
    assert p.returncode == 0, p.stdout + p.stderr + tail(psn.log_path)
    assert f"enrolled {USER} (aa:bb:cc:00:11:22)" in p.stdout
    check_certificate(lab, psn, pan, out)
    log = psn.log_text()
    assert re.search(rf"provisioning.*BYOD enrollment for user {USER} mac aa:bb:cc:00:11:22 "
                     r"from .*certificate serial \S+ issued", log), tail(psn.log_path)
    # The EST client enrolled with the PSN's EST client certificate.
    assert re.search(r"ca-service-cert.*subject CN=alice .*for certificate CN=psn1 ", log), \
        tail(psn.log_path)
    assert PASSWORD not in log

    portal = Portal(lab, psn)
    # GET /byod/ca: the chain; GET /byod/: the page.
    code, hdrs, body = portal.request("/byod/ca")
    assert code == 200, body
    assert re.search(r"(?im)^content-type: application/pem-certificate-chain", hdrs)
    assert len(split_pem(body.decode())) == 3
    code, hdrs, body = portal.request("/byod/")
    assert code == 200 and b"/byod/enroll" in body
    # A base64 DER CSR (no PEM armour) is taken as well, any MAC notation.
    csr_pem = make_csr(lab, "der", san="URI:urn:dev:mac:0011223344ff")
    der = base64.b64encode(subprocess.run(["openssl", "req", "-outform", "DER"],
                                          input=csr_pem.encode(), capture_output=True,
                                          check=True).stdout).decode()
    code, _, body = portal.enroll(username=USER, password=PASSWORD, mac="0011.2233.44FF", csr=der)
    assert code == 200, body
    doc = json.loads(body)
    assert set(doc) == {"certificate", "chain"}
    f = lab.tmp / "der.pem"
    f.write_text(doc["certificate"])
    assert subject_alt_names(cert_text(f)) == ["URI:urn:dev:mac:0011223344ff"]

    # Bad input: a clear answer, and nothing stored.
    before = store_certs(psn)
    csr = make_csr(lab, "bad")
    cases = [
        # (what, status, body or fields, content type, text in the reason)
        ("wrong content type", 415, json.dumps(good(lab, "b1")), "text/plain", "application/json"),
        ("no content type", 415, json.dumps(good(lab, "b2")), None, "application/json"),
        ("not JSON", 400, "username=alice", "application/json", "not JSON"),
        ("JSON array", 400, "[1, 2]", "application/json", "object"),
        ("two JSON values", 400, json.dumps(good(lab, "b3")) + " {}", "application/json",
         "JSON"),
        ("empty body", 400, "", "application/json", "empty"),
        ("missing MAC", 400, {"username": USER, "password": PASSWORD, "csr": csr}, None, '"mac"'),
        ("MAC not a string", 400, {"username": USER, "password": PASSWORD, "mac": 42, "csr": csr},
         None, '"mac"'),
        ("bad MAC", 400, good(lab, "b4", mac="aa:bb:cc:dd:ee:gg"), None, "MAC address"),
        ("mixed separators", 400, good(lab, "b5", mac="aa:bb-cc:dd:ee:ff"), None, "MAC address"),
        ("missing password", 400, {"username": USER, "mac": MAC, "csr": csr}, None, '"password"'),
        ("NUL in user", 400, good(lab, "b6", username="alice\u0000x"), None, "NUL"),
        ("wrong password", 401, good(lab, "b7", password="wrong-password"), None, "wrong user"),
        ("unknown user", 401, good(lab, "b8", username="mallory"), None, "wrong user"),
        ("CSR not base64", 400, good(lab, "b9", csr="not*base64!"), None, "CSR"),
        ("CSR base64 of garbage", 400,
         good(lab, "b10", csr=base64.b64encode(b"\x30\x03\x02\x01\x05").decode()), None, "CSR"),
        ("CN is another user", 400, good(lab, "b11", csr=make_csr(lab, "bob", cn="bob")), None,
         "not the user name"),
        ("SAN is another MAC", 400,
         good(lab, "b12", csr=make_csr(lab, "othermac", san="URI:urn:dev:mac:aabbcc001123")),
         None, "is not the endpoint's"),
        ("no SAN", 400, good(lab, "b13", csr=make_csr(lab, "nosan", san=None)), None,
         "no subjectAltName"),
        ("SAN with a DNS name too", 400,
         good(lab, "b14", csr=make_csr(lab, "twosan", san=MAC_URI + ",DNS:evil.example")), None,
         "exactly the MAC"),
        ("SAN as a DNS name", 400,
         good(lab, "b15", csr=make_csr(lab, "dnssan", san="DNS:aabbcc001122.example")), None,
         "not another type"),
    ]
    # A CSR whose signature does not verify: one bit of it flipped.
    der = bytearray(subprocess.run(["openssl", "req", "-outform", "DER"],
                                   input=make_csr(lab, "badsig").encode(),
                                   capture_output=True, check=True).stdout)
    der[-3] ^= 0x01
    cases.append(("bad CSR signature", 400,
                  good(lab, "b16", csr=base64.b64encode(bytes(der)).decode()), None, "signature"))
    for what, status, body, ctype, text in cases:
        if isinstance(body, dict):
            body, ctype = json.dumps(body), "application/json"
        code, hdrs, answer = portal.request("/byod/enroll", body, ctype=ctype)
        assert code == status, f"{what}: {code} {answer!r}"
        assert re.search(r"(?im)^content-type: application/json", hdrs), f"{what}: {hdrs}"
        reason = error_of(answer)
        assert text in reason, f"{what}: {reason!r}"
    # A body over 64 KiB: 413 from the HTTP layer, before any parsing.
    code, _, _ = portal.request("/byod/enroll", json.dumps(good(lab, "big", pad="x" * 70000)))
    assert code == 413
    # Wrong method and unknown path.
    code, hdrs, _ = portal.request("/byod/enroll")
    assert code == 405 and re.search(r"(?im)^allow: POST", hdrs)
    code, _, _ = portal.request("/byod/nothing")
    assert code == 404
    # Nothing of all that reached the store.
    assert store_certs(psn) == before
    assert PASSWORD not in psn.log_text() and "wrong-password" not in psn.log_text()

    # The script refuses cleanly too: a wrong password, a bad MAC.
    p, _ = onboard(lab, psn, password="wrong-password", name="wrong")
    assert p.returncode == 1 and "refused the enrollment (401)" in p.stderr, p.stderr
    p, _ = onboard(lab, psn, mac="not-a-mac", name="badmac")
    assert p.returncode == 1 and "not a MAC address" in p.stderr, p.stderr
    p = run(["sh", str(ONBOARD), "--help"])
    assert p.returncode == 0 and "--portal" in p.stdout
    p = run(["sh", str(ONBOARD), "--user", USER])
    assert p.returncode == 2 and "--portal is missing" in p.stderr
    assert store_certs(psn) == before

    # The portal survived all of it.
    p, out = onboard(lab, psn, name="again")
    assert p.returncode == 0, p.stderr
    psn.stop()
    assert not est.tcp_listening(psn.address.ip, PORTAL_PORT)


def active_alarm(pan):
    text = pan.alarms()
    return [line for line in text.splitlines() if ALARM in line and "psn1" in line]


def test_byod_est_down_alarm_and_recovery(lab):
    pan, psn = start_byod(lab)
    portal = Portal(lab, psn)
    p, _ = onboard(lab, psn, name="before")
    assert p.returncode == 0, p.stderr
    assert not active_alarm(pan)

    # The EST server dies, and its port is taken so that it stays down.
    est_pid = psn.pids_named("est")
    assert est_pid, psn.diagnostics()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    os.kill(est_pid[0], signal.SIGKILL)

    def bound():
        try:
            blocker.bind((psn.address.ip, est.EST_PORT))   # bound, not listening: refused
            return True
        except OSError:
            return False
    before = store_certs(psn)
    try:
        wait_for(bound, 10, "the EST port to be free")
        wait_for(lambda: "est terminated signal 9" in psn.log_text(), 10, "the crash logged")
        # The portal: a clear error at once, as JSON.
        t0 = time.monotonic()
        code, hdrs, body = portal.enroll(**good(lab, "down"))
        assert code == 503, body
        reason = error_of(body)
        assert "EST server is not available" in reason, reason
        assert time.monotonic() - t0 < 15
        # And the script says so.
        p, _ = onboard(lab, psn, name="down2")
        assert p.returncode == 1 and "(503)" in p.stderr and "not available" in p.stderr, p.stderr
        # The alarm: raised by provisioning, shown on the PAN.
        wait_for(lambda: "alarm raised: " + ALARM in psn.log_text(), 30,
                 "provisioning to raise its alarm", detail=lambda: tail(psn.log_path))
        rows = wait_for(lambda: active_alarm(pan), 30, "the alarm on the PAN",
                        detail=lambda: pan.alarms() + tail(psn.log_path))
        assert "major" in rows[0].lower(), rows
        assert store_certs(psn) == before
    finally:
        blocker.close()

    # EST back (the supervisor restarts it): BYOD works again by itself.
    wait_for(lambda: est.tcp_listening(psn.address.ip), 90, "the EST server to be restarted",
             detail=lambda: tail(psn.log_path))

    def works():
        return onboard(lab, psn, name=f"after{time.monotonic_ns()}")[0].returncode == 0
    wait_for(works, 60, "BYOD onboarding to work again", interval=1,
             detail=lambda: tail(psn.log_path))
    wait_for(lambda: "alarm cleared: " + ALARM in psn.log_text(), 30,
             "provisioning to clear its alarm", detail=lambda: tail(psn.log_path))
    wait_for(lambda: not active_alarm(pan), 30, "the alarm to clear on the PAN",
             detail=lambda: pan.alarms())

    # An incomplete chain (the EST server refreshes it on SIGHUP): the
    # next enrollment fails with the reason, and the same alarm goes up
    # without waiting for the 5-minute cacerts.
    chain = psn.datadir / "ca/chain.pem"
    node_ca, root = split_pem(chain.read_text())
    chain.write_text(root)
    os.kill(psn.pids_named("est")[0], signal.SIGHUP)
    wait_for(lambda: "chain incomplete" in psn.log_text().split("SIGHUP: fetching")[-1], 30,
             "the EST server to see the incomplete chain", detail=lambda: tail(psn.log_path))
    code, _, body = portal.enroll(**good(lab, "incomplete"))
    assert code == 503, body
    assert "incomplete" in error_of(body)
    wait_for(lambda: "incomplete" in pan.alarms() and active_alarm(pan), 30,
             "the incomplete-chain alarm on the PAN",
             detail=lambda: pan.alarms() + tail(psn.log_path))
    # The EST server's own alarm, from its view of the chain.
    wait_for(lambda: "Incomplete CA Chain" in pan.alarms(), 30,
             "the EST server's Incomplete CA Chain alarm on the PAN",
             detail=lambda: pan.alarms() + tail(psn.log_path))
    chain.write_text(node_ca + root)
    os.kill(psn.pids_named("est")[0], signal.SIGHUP)
    wait_for(lambda: not active_alarm(pan), 30, "the alarm to clear after the repair",
             detail=lambda: pan.alarms() + tail(psn.log_path))
    wait_for(lambda: "Incomplete CA Chain" not in pan.alarms(), 30,
             "the Incomplete CA Chain alarm to clear", detail=lambda: pan.alarms())
    p, _ = onboard(lab, psn, name="repaired")
    assert p.returncode == 0, p.stderr


def test_provisioning_restarted_by_supervisor(lab):
    """A crashed provisioning process is logged and restarted with backoff;
    CA and EST are not touched."""
    pan, psn = start_byod(lab)
    prov = psn.pids_named("provisioning")
    assert prov, psn.diagnostics()
    est_before = psn.pids_named("est")
    os.kill(prov[0], signal.SIGKILL)
    wait_for(lambda: "provisioning terminated signal 9" in psn.log_text(), 10,
             "the crash to be logged", detail=lambda: tail(psn.log_path))
    assert re.search(r"provisioning will be restarted in 1 s", psn.log_text())
    wait_for(lambda: (psn.pids_named("provisioning") and
                      psn.pids_named("provisioning") != prov and
                      est.tcp_listening(psn.address.ip, PORTAL_PORT)),
             60, "provisioning to come back", detail=lambda: tail(psn.log_path))
    assert psn.pids_named("est") == est_before
    p, _ = onboard(lab, psn, name="restarted")
    assert p.returncode == 0, p.stderr
