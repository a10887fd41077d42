"""Revocation across the deployment (issue 5 item 2), on real processes:
`pan cert revoke` on the PAN, and each issuing PSN's own OCSP responder
(`psn run`, port 2560 on the PSN's address) answering `revoked`.

- Three PSNs, one of them stopped while the certificates are revoked: the
  running two answer `revoked` at once, the third as soon as it is back and
  has caught up from the event log.
- Ten PSNs: the time from `pan cert revoke` to the issuing PSN answering
  `revoked`, and to every PSN having applied the event, is measured and
  printed (the aim is under 100 ms on loopback; a benchmark figure, not an
  assertion: this machine is shared)."""

import http.client
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_est_psn as est  # noqa: E402
import pytest  # noqa: E402
from iselab import (BUILD, LINK_TIMEOUT, cert_serial, lab, member_events,  # noqa: E402,F401
                    openssl, run, wait_for)

USER, PASSWORD = "revoker", "revoker-password-1"
OCSP_PORT = 2560


def start_psns(lab, n):
    pan = lab.pan()
    pan.user_add(USER, PASSWORD)
    psns = []
    for i in range(1, n + 1):
        psn = lab.psn(f"psn{i}")
        psn.join(pan.node_add(psn.hostname, "psn"), check=True)
        psns.append(psn)
    for psn in psns:
        psn.start()
    for psn in psns:
        wait_for(lambda: est.tcp_listening(psn.address.ip) and
                 est.tcp_listening(psn.address.ip, OCSP_PORT),
                 est.START_TIMEOUT, f"{psn.hostname} to serve EST and OCSP",
                 detail=psn.log_text)
        psn.wait_events(pan)
    return pan, psns


def enroll(lab, psn, name):
    """A device certificate from psn over EST (Basic, curl), and its serial."""
    host, ip = psn.hostname, psn.address.ip
    csr, body = lab.tmp / f"{name}.csr.b64", lab.tmp / f"{name}.p7"
    csr.write_bytes(est.make_csr(lab, name, name))
    p = run(["curl", "-sS", "--max-time", "30", "--resolve", f"{host}:8084:{ip}",
             "--cacert", str(psn.datadir / "ca" / "root-ca.crt"), "-u", f"{USER}:{PASSWORD}",
             "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{csr}",
             "-o", str(body), "-w", "%{http_code}",
             f"https://{host}:8084/.well-known/est/simpleenroll"], timeout=60)
    assert p.returncode == 0 and p.stdout == "200", p.stdout + p.stderr
    cert = est.issued_cert(lab, body.read_bytes(), name)
    return cert, cert_serial(cert).lstrip("0").lower()


class Responder:
    """One PSN's OCSP responder for one certificate: a prepared request
    (no nonce, so the answer is the pre-signed one) POSTed over a plain
    HTTP connection, and openssl to read the answer."""

    def __init__(self, lab, psn, cert):
        self.lab, self.psn, self.cert = lab, psn, cert
        d = psn.datadir / "ca"
        self.sub = d / "endpoint-sub-ca.crt"
        self.chain = lab.tmp / f"{psn.hostname}-ocsp-chain.pem"
        self.chain.write_text(self.sub.read_text() + (d / "chain.pem").read_text())
        self.root = d / "root-ca.crt"
        req = lab.tmp / f"{psn.hostname}-{cert.stem}.ocspreq"
        openssl("ocsp", "-issuer", str(self.sub), "-cert", str(cert), "-no_nonce",
                "-reqout", str(req))
        self.req = req.read_bytes()

    def post(self):
        c = http.client.HTTPConnection(self.psn.address.ip, OCSP_PORT, timeout=10)
        try:
            c.request("POST", "/ocsp", body=self.req,
                      headers={"Content-Type": "application/ocsp-request"})
            r = c.getresponse()
            assert r.status == 200, r.status
            return r.read()
        finally:
            c.close()

    def status(self, body=None):
        """good / revoked / unknown, after strict verification."""
        body = body if body is not None else self.post()
        f = self.lab.tmp / f"{self.psn.hostname}-{self.cert.stem}.ocspresp"
        f.write_bytes(body)
        p = openssl("ocsp", "-respin", str(f), "-issuer", str(self.sub), "-cert",
                    str(self.cert), "-CAfile", str(self.root), "-verify_other",
                    str(self.chain), check=None)
        out = p.stdout + p.stderr
        assert "Response verify OK" in out, out
        for word in ("revoked", "good", "unknown"):
            if f"{self.cert}: {word}" in out:
                return word, out
        raise AssertionError(out)


def test_three_psns_one_stopped_during_the_revoke(lab):
    pan, psns = start_psns(lab, 3)
    devs = []
    for psn in psns:
        cert, serial = enroll(lab, psn, f"dev-{psn.hostname}")
        r = Responder(lab, psn, cert)
        assert r.status()[0] == "good"
        devs.append((psn, cert, serial, r))
    for psn, _, serial, _ in devs:
        wait_for(lambda: serial in pan.cli("cert", "list", "--node", psn.hostname).stdout.lower(),
                 LINK_TIMEOUT, f"{serial} of {psn.hostname} on the PAN")
    stopped = psns[2]
    stopped.stop()
    for psn, _, serial, _ in devs:
        pan.cli("cert", "revoke", serial, "--node", psn.hostname, "--reason", "keyCompromise",
                check=True)
    for psn, _, _, r in devs[:2]:
        wait_for(lambda: r.status()[0] == "revoked", 10,
                 f"{psn.hostname}'s responder to answer revoked")
        word, out = r.status()
        assert "Reason: keyCompromise" in out and "Revocation Time:" in out, out
    # Back: it catches up from the log, and only then answers revoked.
    t0 = time.monotonic()
    stopped.start()
    wait_for(lambda: est.tcp_listening(stopped.address.ip, OCSP_PORT), est.START_TIMEOUT,
             "psn3's responder back", detail=stopped.log_text)
    r = devs[2][3]
    wait_for(lambda: r.status()[0] == "revoked", LINK_TIMEOUT,
             "psn3's responder to answer revoked after catching up",
             detail=stopped.log_text)
    print(f"psn3 answered revoked {1000 * (time.monotonic() - t0):.0f} ms after its start")
    stopped.wait_events(pan)
    assert member_events(stopped)[0] == pan.event_seq()
    # Every PSN holds every event, though each answers for its own CA only
    # (the log moves on meanwhile: alarm records of psn3's absence).
    for psn in psns:
        psn.wait_events(pan)


def sanitized():
    """Whether the build under test is a sanitizer build."""
    try:
        opts = json.loads((BUILD / "meson-info" / "intro-buildoptions.json").read_text())
    except OSError:
        return False
    return any(o["name"] == "b_sanitize" and o["value"] not in ("none", "", [])
               for o in opts)


def test_revocation_latency_ten_psns(lab):
    # A figure, not a check: under the sanitizers it means nothing, and
    # fifty instrumented processes cost CI minutes.  The three-PSN test
    # above runs in both builds.
    if sanitized():
        pytest.skip("latency figure: measured in the normal build only")
    pan, psns = start_psns(lab, 10)
    devs = []
    for psn in psns:
        cert, serial = enroll(lab, psn, f"dev-{psn.hostname}")
        r = Responder(lab, psn, cert)
        devs.append((psn, serial, r, r.post()))
    for psn, serial, _, _ in devs:
        wait_for(lambda: serial in pan.cli("cert", "list", "--node", psn.hostname).stdout.lower(),
                 LINK_TIMEOUT, f"{serial} of {psn.hostname} on the PAN")
    to_answer, to_all, cli = [], [], []
    for psn, serial, r, before in devs:
        t0 = time.monotonic()
        pan.cli("cert", "revoke", serial, "--node", psn.hostname, check=True)
        t1 = time.monotonic()
        want = pan.event_seq()
        # The issuing PSN: the first answer that is not the old one.
        deadline = t0 + 10
        while True:
            body = r.post()
            if body != before:
                break
            assert time.monotonic() < deadline, f"{psn.hostname} never changed its answer"
            time.sleep(0.002)
        t2 = time.monotonic()
        assert r.status(body)[0] == "revoked"
        # Every PSN applied the event (their status, polled).
        wait_for(lambda: all(member_events(p)[0] >= want for p in psns), 10,
                 "every PSN to apply the revocation")
        t3 = time.monotonic()
        cli.append(1000 * (t1 - t0))
        to_answer.append(1000 * (t2 - t0))
        to_all.append(1000 * (t3 - t0))
    print("\nrevocation on the PAN -> the issuing PSN's OCSP answers revoked, 10 PSNs:")
    print(f"  including `pan cert revoke` itself ({statistics.median(cli):.0f} ms median):"
          f" median {statistics.median(to_answer):.0f} ms, max {max(to_answer):.0f} ms"
          f" (aim: under 100 ms)")
    print(f"  every PSN applied the event (polled with `psn status`, ~10 processes):"
          f" median {statistics.median(to_all):.0f} ms, max {max(to_all):.0f} ms")
