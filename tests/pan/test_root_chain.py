"""`pan ca replace-root-chain` on real executables (issue 8 item 6,
docs/certificates.md "Replacing the root CA chain"): a new root and Node CA
on the PAN, a running PSN renews its Endpoint Sub CA and its own
certificates with new keys made on the PSN, new enrollments verify to the
new root, what the old chain issued still verifies to the old root."""

import base64
import http.client
import re
import socket
import ssl
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "psn"))
from iselab import LINK_TIMEOUT, PASSPHRASE, lab, openssl, verify, wait_for  # noqa: E402,F401
import test_est_psn as est  # noqa: E402
from test_ocsp_pan import ocsp, status_of, url_of  # noqa: E402
from test_replication import USER, PASSWORD, enroll_basic, running_psn  # noqa: E402
from estload import Https, make_csr, simpleenroll  # noqa: E402

RENEW_TIMEOUT = 120
# EST clients enrolling in a loop across the replacement.
LOAD_CLIENTS = 2
# Enrollments begun once the PSN has switched before the load stops.
LOAD_AFTER = 6
# One enrollment's or one keep-alive request's longest wait.
HTTP_TIMEOUT = 60.0
# Pause between two requests on the keep-alive connection (well below
# est.timeout, the server's idle timeout).
KEEPALIVE_EVERY_S = 0.5
SERVICES = ("Certificate Authority Service", "EST Service", "OCSP Responder",
            "Provisioning Service")


def pubkey(path):
    return openssl("x509", "-in", str(path), "-noout", "-pubkey").stdout


def generation(node):
    f = node.datadir / "ca" / "generation"
    return f.read_text().strip() if f.exists() else "1"


def cert_serial(path):
    return openssl("x509", "-in", str(path), "-noout", "-serial").stdout.strip().split("=")[1]


def ocsp_status(lab, issuer, url, cert, root, others):
    """The status a responder gives cert, its response strictly verified."""
    rc, out = ocsp(lab, issuer, url, "-cert", str(cert), cafile=root, others=others)
    return status_of(out, cert) if "Response verify OK" in out else out


def wait_status(lab, want, *args):
    wait_for(lambda: ocsp_status(lab, *args) == want, RENEW_TIMEOUT,
             f"OCSP {want} for {args[2]}", detail=lambda: ocsp_status(lab, *args))


def enroll(lab, psn, cn):
    status, _, body = enroll_basic(lab, psn, USER, PASSWORD, cn)
    assert status == 200, (status, body)
    return est.issued_cert(lab, body, cn)


def service_pids(node):
    """{service row title: pid} of the running services (`psn status`)."""
    st = node.status().stdout
    pids = {}
    for title in SERVICES:
        m = re.search(rf"^{re.escape(title)}\s+running\s+(\d+)", st, re.M)
        if m:
            pids[title] = int(m.group(1))
    return pids


class Repeating:
    """ask() now, then every KEEPALIVE_EVERY_S in a thread until finish()
    (or halt(), at the lab's close if the test failed first); the first
    failure ends the thread and is kept in errors."""

    def repeat(self, lab):
        self.count, self.errors = 0, []
        self.ask()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        lab.on_close(self.halt)

    def halt(self):
        self.done.set()
        self.thread.join(HTTP_TIMEOUT)

    def _run(self):
        while not self.done.wait(KEEPALIVE_EVERY_S):
            try:
                self.ask()
            except Exception as e:  # noqa: BLE001 (reported by finish())
                self.errors.append(repr(e))
                return

    def finish(self):
        """Stop, check that every answer was right, and ask once more."""
        self.halt()
        assert not self.thread.is_alive(), "the keep-alive client hangs"
        assert not self.errors, self.errors
        return self.ask()


class OcspKeepAlive(Repeating):
    """One plain HTTP connection to the PAN's OCSP responder (2560), on
    which the same POSTed request is answered every KEEPALIVE_EVERY_S
    (an idle connection is closed by the server's timeout) from before the
    replacement until stop(); the socket must stay the same (http.client
    would reconnect silently)."""

    def __init__(self, lab, pan, issuer, cert):
        self.req = lab.tmp / "pan-ocsp-keepalive.der"
        openssl("ocsp", "-issuer", str(issuer), "-cert", str(cert), "-no_nonce",
                "-reqout", str(self.req), check=True)
        self.c = http.client.HTTPConnection(pan.address.ip, 2560, timeout=HTTP_TIMEOUT)
        self.c.connect()
        self.sock = self.c.sock
        self.repeat(lab)

    def stop(self):
        self.finish()
        assert self.count > 2, self.count

    def ask(self):
        self.c.request("POST", "/ocsp", body=self.req.read_bytes(),
                       headers={"Content-Type": "application/ocsp-request"})
        r = self.c.getresponse()
        body = r.read()
        assert r.status == 200 and r.getheader("Content-Type") == "application/ocsp-response", \
            (r.status, r.getheaders(), body[:200])
        assert self.c.sock is self.sock and self.sock.fileno() != -1, \
            "the keep-alive connection to the PAN's OCSP responder was closed"
        self.count += 1
        return body


def wait_signing(psn, gen=2):
    """Until psn's CA service signs with the Sub CA of generation gen."""
    line = (f"ca-service INFO root CA chain generation {gen}: signing with the new "
            "Endpoint Sub CA")
    wait_for(lambda: line in psn.log_text(), RENEW_TIMEOUT,
             f"{psn.hostname}'s CA service to sign with the new Sub CA", detail=psn.log_text)


def served_cert(node, port=est.EST_PORT):
    """The DER certificate a new TLS connection to node:port is given."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((node.address.ip, port), 10) as sock:
        with ctx.wrap_socket(sock, server_hostname=node.hostname) as tls:
            return tls.getpeercert(binary_form=True)


def pem_der(path):
    return x509.load_pem_x509_certificate(Path(path).read_bytes()).public_bytes(
        serialization.Encoding.DER)


class KeepAlive(Repeating):
    """One HTTPS connection to 8084, opened now, trusting the old root only:
    GET /cacerts on it every KEEPALIVE_EVERY_S until stop(); http.client
    would reconnect silently, so the socket object and its local port are
    checked to stay the same at every request."""

    def __init__(self, lab, psn, root):
        ctx = ssl.create_default_context(cafile=str(root))
        self.c = Https(psn.address.ip, est.EST_PORT, psn.hostname, ctx, HTTP_TIMEOUT)
        self.c.connect()
        self.sock = self.c.sock
        self.local = self.sock.getsockname()
        self.server_cert = self.sock.getpeercert(binary_form=True)
        self.repeat(lab)

    def ask(self):
        self.c.request("GET", "/.well-known/est/cacerts")
        r = self.c.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body[:200])
        assert r.getheader("Connection", "").lower() != "close", r.getheaders()
        assert self.c.sock is self.sock and self.sock.fileno() != -1, \
            "the keep-alive connection was closed and made again"
        assert self.sock.getsockname() == self.local
        self.count += 1
        return body

    def stop(self):
        body = self.finish()  # the last answer, after the switch
        self.c.close()
        return body


class EnrollLoad:
    """LOAD_CLIENTS EST clients enrolling (HTTP Basic, a fresh key each
    time) in a loop until stop(), each with a new connection; a client
    trusts the old root and whatever root the PAN holds now (the new one
    once it is made), as a device that fetched the new trust anchors would.
    got: [(start monotonic, cn, PEM path)]; failures: one line each."""

    def __init__(self, lab, psn, old_root, pan):
        self.lab, self.psn, self.old_root, self.pan = lab, psn, old_root, pan
        self.auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.lock = threading.Lock()
        self.got, self.failures, self.n = [], [], 0
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(LOAD_CLIENTS)]
        for t in self.threads:
            t.start()
        lab.on_close(self.halt)

    def halt(self):
        self.done.set()
        for t in self.threads:
            t.join(HTTP_TIMEOUT * 2)

    def _roots(self):
        old = Path(self.old_root).read_text()
        now = (self.pan.datadir / "ca" / "root-ca.crt").read_text()
        return old if now == old else old + now

    def _enroll(self, cn):
        key, der = make_csr(cn)
        ctx = ssl.create_default_context(cadata=self._roots())
        r, body = simpleenroll(self.psn, ctx, self.auth, der, HTTP_TIMEOUT)
        assert r.status == 200, f"HTTP {r.status} {body[:200]!r}"
        certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
        assert len(certs) == 1 and certs[0].public_key().public_numbers() == \
            key.public_key().public_numbers(), cn
        return certs[0].public_bytes(serialization.Encoding.PEM)

    def _run(self):
        while not self.done.is_set():
            with self.lock:
                self.n += 1
                cn = f"load-{self.n:04d}"
            start = time.monotonic()
            try:
                pem = self._enroll(cn)
            except Exception as e:  # noqa: BLE001 (every failure counts)
                with self.lock:
                    self.failures.append(f"{cn}: {e!r}")
                continue
            path = self.lab.tmp / f"{cn}.pem"
            path.write_bytes(pem)
            with self.lock:
                self.got.append((start, cn, path))

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(HTTP_TIMEOUT * 2)
            assert not t.is_alive(), "an EST client thread hangs"


def test_services_switch_in_place(lab):
    """The running services take the new certificates without a restart:
    same PIDs, a keep-alive connection opened before goes on working on
    the same socket, new connections get the new EST server certificate,
    and enrollments running all along never fail (each verifies to the old
    or the new root; those begun once the CA service signs with the new
    Sub CA verify to the new root)."""
    pan, psn = running_psn(lab)
    pan.user_add(USER, PASSWORD)
    psn.wait_events(pan)
    ca = psn.datadir / "ca"
    old_root = lab.tmp / "old-root.pem"
    old_root.write_text((pan.datadir / "ca" / "root-ca.crt").read_text())
    old_untrusted = lab.tmp / "old-untrusted.pem"
    old_untrusted.write_text((ca / "chain.pem").read_text() + (ca / "endpoint-sub-ca.crt").read_text())
    pids = service_pids(psn)
    assert set(pids) == set(SERVICES), psn.status().stdout
    old_est = served_cert(psn)
    assert old_est == pem_der(ca / "est-server.crt")
    old_portal = served_cert(psn, 8443)

    alive = KeepAlive(lab, psn, old_root)
    # The PAN's OCSP responder switches in place too: same worker, and a
    # connection opened before is answered after on the same socket.
    pan_ocsp = pan.pids_named("ocsp-http")
    assert pan_ocsp, "no ocsp-http process on the PAN"
    pan_alive = OcspKeepAlive(lab, pan, pan.datadir / "ca" / "node-ca.crt",
                              ca / "endpoint-sub-ca.crt")
    load = EnrollLoad(lab, psn, old_root, pan)
    wait_for(lambda: len(load.got) + len(load.failures) >= LOAD_CLIENTS, HTTP_TIMEOUT,
             "the load to get going")

    pan.cli("ca", "replace-root-chain", check=True, timeout=400)
    new_root = pan.datadir / "ca" / "root-ca.crt"
    wait_for(lambda: generation(psn) == "2", RENEW_TIMEOUT, "psn1 to install generation 2",
             detail=psn.log_text)
    wait_signing(psn)
    switched = time.monotonic()
    new_est = pem_der(ca / "est-server.crt")
    assert new_est != old_est
    wait_for(lambda: served_cert(psn) == new_est, RENEW_TIMEOUT,
             "new EST connections to get the new certificate", detail=psn.log_text)
    wait_for(lambda: served_cert(psn, 8443) != old_portal, RENEW_TIMEOUT,
             "new portal connections to get the new certificate", detail=psn.log_text)
    assert served_cert(psn, 8443) == new_est  # the portal serves the EST server's
    # The load goes on a while on the new chain.
    wait_for(lambda: sum(1 for start, _, _ in list(load.got) if start > switched)
             >= LOAD_AFTER, HTTP_TIMEOUT * 2, f"{LOAD_AFTER} enrollments after the switch",
             detail=lambda: "\n".join(load.failures))
    load.stop()
    body = alive.stop()

    # The connection opened before kept its certificate and its socket,
    # and /cacerts on it now holds the new chain.
    assert alive.server_cert == old_est
    assert alive.count > 2, alive.count
    cc = lab.tmp / "cacerts-alive.b64"
    cc.write_bytes(body)
    got = {pubkey_pem(pem) for pem in est.pkcs7_certs(lab, body, "alive")}
    assert pubkey(ca / "endpoint-sub-ca.crt") in got

    assert service_pids(psn) == pids, "a service was restarted"
    assert "will be restarted" not in psn.log_text()
    wait_for(lambda: "taken in place" in pan.log_text(), RENEW_TIMEOUT,
             "the PAN's OCSP responder to take the new generation", detail=pan.log_text)
    pan_alive.stop()
    assert pan.pids_named("ocsp-http") == pan_ocsp, "the PAN's OCSP worker was restarted"

    assert not load.failures, load.failures
    assert load.got, "no enrollment during the replacement"
    new_untrusted = lab.tmp / "new-untrusted.pem"
    new_untrusted.write_text((ca / "chain.pem").read_text() + (ca / "endpoint-sub-ca.crt").read_text())
    late = 0
    for start, cn, path in load.got:
        new_ok = verify(new_root, path, untrusted=new_untrusted).returncode == 0
        old_ok = verify(old_root, path, untrusted=old_untrusted).returncode == 0
        assert new_ok or old_ok, f"{cn} verifies to neither root"
        if start > switched:
            late += 1
            assert new_ok, f"{cn}, begun after the switch, is not under the new root"
    assert late > 0, "no enrollment after the switch"


def private_key_matches(key, cert):
    """Whether the encrypted key at key is cert's (decrypted with the lab's
    passphrase)."""
    p = openssl("pkey", "-in", str(key), "-passin", f"pass:{PASSPHRASE}", "-pubout",
                check=None)
    return p.returncode == 0 and p.stdout == pubkey(cert)


def pubkey_pem(pem):
    return openssl("x509", "-noout", "-pubkey", input=pem).stdout


def test_replace_root_chain_renews_psn(lab):
    pan, psn = running_psn(lab)
    # A SAN running during the replacement: it renews its Node CA.
    san = lab.san("san1")
    san.join(pan.node_add("san1", "san"), check=True)
    san.start()
    sca = san.datadir / "ca"
    old_san_key = pubkey(sca / "node-ca.crt")
    # san2 joined, and down during the replacement.
    san2 = lab.san("san2")
    san2.join(pan.node_add("san2", "san"), check=True)
    old_san2_key = pubkey(san2.datadir / "ca" / "node-ca.crt")
    # psn2 joined, and down during the replacement.
    psn2 = lab.psn("psn2")
    psn2.join(pan.node_add("psn2", "psn"), check=True)
    old_sub2 = pubkey(psn2.datadir / "ca" / "endpoint-sub-ca.crt")
    pan.user_add(USER, PASSWORD)
    psn.wait_events(pan)
    ca = psn.datadir / "ca"
    old_root = lab.tmp / "old-root.pem"
    old_root.write_text((pan.datadir / "ca" / "root-ca.crt").read_text())
    old_chain = lab.tmp / "old-chain.pem"
    old_chain.write_text((ca / "chain.pem").read_text() + (ca / "endpoint-sub-ca.crt").read_text())
    old_keys = {n: pubkey(ca / f"{n}.crt") for n in
                ("endpoint-sub-ca", "ocsp-responder", "est-server", "est-client")}
    before = enroll(lab, psn, "before")

    p = pan.cli("ca", "replace-root-chain", check=True, timeout=400)
    assert "generation 2" in p.stdout, p.stdout
    assert generation(pan) == "2"
    new_root = pan.datadir / "ca" / "root-ca.crt"
    assert pubkey(new_root) != pubkey(old_root)
    # RFC 7030 4.1.3 / RFC 4210 4.4 link certificates.
    own, nwo = pan.datadir / "ca" / "old-with-new.crt", pan.datadir / "ca" / "new-with-old.crt"
    assert pubkey(own) == pubkey(old_root) and pubkey(nwo) == pubkey(new_root)
    assert verify(new_root, own).returncode == 0
    assert verify(old_root, nwo).returncode == 0
    assert verify(old_root, own).returncode != 0

    wait_for(lambda: generation(psn) == "2", RENEW_TIMEOUT, "psn1 to install generation 2",
             detail=psn.log_text)
    for n, k in old_keys.items():
        assert pubkey(ca / f"{n}.crt") != k, f"{n}: same key after the replacement"
    untrusted = lab.tmp / "new-chain.pem"
    untrusted.write_text((ca / "chain.pem").read_text())
    assert verify(new_root, ca / "endpoint-sub-ca.crt", untrusted=untrusted).returncode == 0
    assert (ca / "gen-1" / "endpoint-sub-ca.crt").exists()

    # The SAN: a new Node CA, its key made on the SAN, under the new root;
    # the old one kept in gen-1.
    wait_for(lambda: generation(san) == "2", RENEW_TIMEOUT, "san1 to install generation 2",
             detail=san.log_text)
    assert pubkey(sca / "node-ca.crt") != old_san_key
    assert verify(new_root, sca / "node-ca.crt").returncode == 0
    assert verify(old_root, sca / "node-ca.crt").returncode != 0
    assert pubkey(sca / "gen-1" / "node-ca.crt") == old_san_key
    assert (sca / "root-ca.crt").read_text() == new_root.read_text()
    assert private_key_matches(sca / "node-ca.key", sca / "node-ca.crt")
    assert "renewed the node-ca of san1" in pan.log_text()

    # The services switch to the new certificates (SIGHUP after the
    # install): a new enrollment verifies to the new root, not the old one.
    wait_for(lambda: served_cert(psn) == pem_der(ca / "est-server.crt"), RENEW_TIMEOUT,
             "psn1's EST server to switch", detail=psn.log_text)
    wait_signing(psn)
    lab_est = est.Est(lab, psn, psn.address)

    def enrolled():
        status, _, body = enroll_basic(lab, psn, USER, PASSWORD, "after")
        return status == 200 and body

    body = wait_for(enrolled, RENEW_TIMEOUT, "an enrollment under the new chain")
    after = est.issued_cert(lab, body, "after")
    untrusted.write_text((ca / "chain.pem").read_text() + (ca / "endpoint-sub-ca.crt").read_text())
    assert verify(new_root, after, untrusted=untrusted).returncode == 0
    assert verify(old_root, after, untrusted=untrusted).returncode != 0
    # What the old chain issued still verifies to the old root.
    assert verify(old_root, before, untrusted=old_chain).returncode == 0

    # OCSP: the PSN answers for both generations, each signed by its own
    # generation's responder; the PAN for both Sub CAs.
    g1, pg1 = ca / "gen-1", pan.datadir / "ca" / "gen-1"
    old_sub, old_node = g1 / "endpoint-sub-ca.crt", pg1 / "node-ca.crt"
    new_sub, new_node = ca / "endpoint-sub-ca.crt", pan.datadir / "ca" / "node-ca.crt"
    wait_status(lab, "good", old_sub, url_of(psn), before, old_root, [old_sub, old_node])
    wait_status(lab, "good", new_sub, url_of(psn), after, new_root, [new_sub, new_node])
    wait_status(lab, "good", old_node, url_of(pan), old_sub, old_root, [old_node])
    wait_status(lab, "good", new_node, url_of(pan), new_sub, new_root, [new_node])

    # cacerts (RFC 7030 4.1.3): the new chain, OldWithNew, NewWithOld.
    status, _, body = lab_est.request("cacerts")
    assert status == 200
    got = [lab.tmp / f"cacerts-{i}.pem" for i in range(len(est.pkcs7_certs(lab, body, "cc")))]
    for path, pem in zip(got, est.pkcs7_certs(lab, body, "cc")):
        path.write_text(pem)
    keys = [pubkey(g) for g in got]
    assert pubkey(new_sub) in keys and pubkey(new_node) in keys
    own_got = [g for g in got if pubkey(g) == pubkey(old_root)]
    nwo_got = [g for g in got if pubkey(g) == pubkey(new_root)
               and verify(old_root, g).returncode == 0]
    assert len(own_got) == 1 and verify(new_root, own_got[0]).returncode == 0
    assert len(nwo_got) == 1

    # EST client-certificate authentication with a certificate of the old
    # chain: a re-enrollment, which the new chain issues.
    csr = est.make_csr(lab, "before", "before-re")
    status, _, body = lab_est.request("simplereenroll", "--cert", str(before), "--key",
                                      str(lab.tmp / "before.key"), data=csr)
    assert status == 200, body
    renewed = est.issued_cert(lab, body, "before-re")
    assert verify(new_root, renewed, untrusted=untrusted).returncode == 0

    # Revoked under the old chain: the old responder says so, EST refuses it.
    pan.cli("cert", "revoke", cert_serial(before), check=True)
    wait_status(lab, "revoked", old_sub, url_of(psn), before, old_root, [old_sub, old_node])
    status, _, body = lab_est.request("simplereenroll", "--cert", str(before), "--key",
                                      str(lab.tmp / "before.key"), data=csr)
    assert status in (401, 403), (status, body)

    # `pan ca certs` shows both generations, the old one marked; --verify
    # trusts the old chain: psn2, down, is not renewed yet, not invalid.
    tree = pan.cli("ca", "certs", check=True).stdout
    assert "Root CA chain generation 1 (old" in tree, tree
    old_part = tree.split("Root CA chain generation 1 (old")[1]
    assert "generation 1, old" in old_part and "psn1" in old_part and "san1" in old_part, tree
    assert re.search(r"Endpoint Sub CA - psn2\n\S*\s+not renewed yet \(generation 1\)",
                     tree.split("Root CA chain generation 1")[0]), tree
    p = pan.cli("ca", "certs", "--verify")
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"^psn1\s+psn\s+Endpoint Sub CA\s+valid up to the Root CA", p.stdout, re.M), \
        p.stdout
    assert re.search(r"^san1\s+san\s+Node CA\s+valid up to the Root CA", p.stdout, re.M), p.stdout
    assert re.search(r"^psn2\s+psn\s+Endpoint Sub CA\s+not renewed yet \(generation 1\)",
                     p.stdout, re.M), p.stdout
    assert "INVALID" not in p.stdout, p.stdout

    # The PSN that was down renews by itself when it starts again.
    psn2.start()
    ca2 = psn2.datadir / "ca"
    wait_for(lambda: generation(psn2) == "2", RENEW_TIMEOUT, "psn2 to install generation 2",
             detail=psn2.log_text)
    assert pubkey(ca2 / "endpoint-sub-ca.crt") != old_sub2
    untrusted.write_text((ca2 / "chain.pem").read_text())
    assert verify(new_root, ca2 / "endpoint-sub-ca.crt", untrusted=untrusted).returncode == 0
    p = pan.cli("ca", "certs", "--verify", check=True)
    assert re.search(r"^psn2\s+psn\s+Endpoint Sub CA\s+valid up to the Root CA", p.stdout, re.M), \
        p.stdout

    # So does the SAN that was down.
    assert re.search(r"^san2\s+san\s+Node CA\s+not renewed yet \(generation 1\)", p.stdout,
                     re.M), p.stdout
    san2.start()
    wait_for(lambda: generation(san2) == "2", RENEW_TIMEOUT, "san2 to install generation 2",
             detail=san2.log_text)
    s2 = san2.datadir / "ca"
    assert pubkey(s2 / "node-ca.crt") != old_san2_key
    assert verify(new_root, s2 / "node-ca.crt").returncode == 0
    assert private_key_matches(s2 / "node-ca.key", s2 / "node-ca.crt")

    # pan node list's CERT-EXPIRY is the new CA certificate's, also once
    # the PAN loads the records again.
    want = {"psn1": ca / "endpoint-sub-ca.crt", "psn2": ca2 / "endpoint-sub-ca.crt",
            "san1": sca / "node-ca.crt", "san2": s2 / "node-ca.crt"}
    assert not_after(ca / "endpoint-sub-ca.crt") != not_after(old_sub)
    wait_for(lambda: all(pan.node_list()[h][5] == not_after(c) for h, c in want.items()),
             RENEW_TIMEOUT, "CERT-EXPIRY of the renewed nodes",
             detail=lambda: pan.cli("node", "list").stdout)
    pan.stop()
    pan.start()
    rows = pan.node_list()
    assert all(rows[h][5] == not_after(c) for h, c in want.items()), rows


def not_after(path):
    """A certificate's notAfter as pan node list prints it."""
    x = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return x.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ")


def log_ms(line):
    """Epoch ms of a log line's timestamp (2026-11-28T14:04:13.730Z ...)."""
    stamp = line.split()[0]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp() * 1000


def test_daemon_serves_while_the_signer_makes_keys(lab):
    """RSA 4096 keys take the signer seconds: the PAN's daemon goes on
    answering heartbeats meanwhile (a PSN beating every second sees acks
    dated inside the signer's work), and the command still answers."""
    pan = lab.pan(ca_key="rsa:4096")
    psn = lab.psn("psn1")
    psn.join(pan.node_add("psn1", "psn"), check=True)
    psn.start("--set", "heartbeat.interval=1s")
    ack = re.compile(r"PAN link: +connected .*?, last heartbeat ack (\S+ \S+) UTC")
    wait_for(lambda: ack.search(psn.status().stdout), LINK_TIMEOUT, "psn1's link",
             detail=psn.log_text)

    result = {}
    cli = threading.Thread(target=lambda: result.setdefault(
        "p", pan.cli("ca", "replace-root-chain", timeout=400)), daemon=True)
    cli.start()
    # Other commands are answered meanwhile (the control socket is a
    # ROUTER owing one deferred answer); a second replacement is refused.
    wait_for(lambda: "replacing the root CA chain: generation 2" in pan.log_text(), 60,
             "the replacement to begin", detail=pan.log_text)
    second = pan.cli("ca", "replace-root-chain", timeout=60)
    listed = pan.cli("node", "list", timeout=60)
    during = cli.is_alive()
    acks = set()
    while cli.is_alive():
        m = ack.search(psn.status().stdout)
        if m:
            acks.add(m.group(1))
        time.sleep(0.2)
    cli.join()
    p = result["p"]
    assert p.returncode == 0 and "generation 2" in p.stdout, p.stdout + p.stderr

    log = pan.log_text().splitlines()
    began = [log_ms(ln) for ln in log if "replacing the root CA chain: generation 2" in ln]
    done = [ln for ln in log if "the CA signer made generation 2's keys in" in ln]
    assert began and done, "\n".join(log[-40:])
    assert "the daemon served meanwhile" in done[0]
    start, end = began[0], log_ms(done[0])
    assert generation(pan) == "2"   # not 3: a second one did nothing
    if during:
        assert second.returncode == 1 and "under way" in second.stderr, \
            second.stdout + second.stderr
        assert listed.returncode == 0 and "psn1" in listed.stdout, listed.stdout + listed.stderr
    if end - start < 2500:
        pytest.skip(f"the signer was done in {end - start:.0f} ms: too short to tell")
    assert during, "pan ca replace-root-chain and node list waited for the first replacement"
    inside = [a for a in acks
              if start < datetime.strptime(a, "%Y-%m-%d %H:%M:%S").replace(
                  tzinfo=timezone.utc).timestamp() * 1000 and
              datetime.strptime(a, "%Y-%m-%d %H:%M:%S").replace(
                  tzinfo=timezone.utc).timestamp() * 1000 + 1000 <= end]
    assert inside, f"no heartbeat ack while the signer worked ({start:.0f}..{end:.0f}): {acks}"
    wait_for(lambda: generation(psn) == "2", RENEW_TIMEOUT, "psn1 to install generation 2",
             detail=psn.log_text)


def test_replace_root_chain_refused_without_daemon(lab):
    pan = lab.pan(start=False)
    p = pan.cli("ca", "replace-root-chain")
    assert p.returncode != 0
    assert "not running" in p.stderr, p.stderr
    assert generation(pan) == "1"


def test_removed_node_does_not_renew(lab):
    """A node removed after the replacement cannot ask for its renewal: the
    PAN refuses its CURVE key (the handshake; rootchain_renew() refuses a
    removed node's RenewRequest too), so it stays on the old chain."""
    pan = lab.pan()
    psn = lab.psn("psn1")
    psn.join(pan.node_add("psn1", "psn"), check=True)
    pan.cli("ca", "replace-root-chain", check=True, timeout=400)
    pan.cli("node", "remove", "psn1", check=True)
    psn.start(wait=False)
    wait_for(lambda: "belongs to a removed node" in pan.log_text(), RENEW_TIMEOUT,
             "the PAN to refuse psn1's key", detail=pan.log_text)
    assert generation(psn) == "1"
    assert "renewed the endpoint-sub-ca of psn1" not in pan.log_text()
