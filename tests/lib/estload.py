"""An EST enrollment load on real PSNs, for the fault tests
(tests/psn/test_faults.py, tests/san/test_promote_faults.py): clients that
enroll the way a device does (a fresh key and CSR each time, HTTP Basic,
the answer checked), run in threads, and the admin node's `cert list`
read across every page to compare serials."""

import base64
import http.client
import socket
import ssl
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from iselab import parse_table, wait_for

EST_PORT = 8084
# EST clients per PSN by default.
LOAD_THREADS = 4
# One enrollment's longest wait (TLS, PBKDF2 of Basic, signing); generous
# for a sanitizer build on a loaded machine.
ENROLL_TIMEOUT = 60.0
# How long a held request waits for release() at most: past it, it goes
# anyway (the test that forgot to release then sees it in the wrong phase).
HOLD_TIMEOUT = 600.0


def norm(serial):
    """A serial as `pan cert list` and mdb_dump print it: lower-case hex,
    no leading zeros."""
    if isinstance(serial, int):
        return format(serial, "x")
    return serial.lower().replace(":", "").lstrip("0")


def make_csr(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.DER)


def cert_list(node, *args):
    """`pan cert list ARGS` (or `san cert list` on a promoted SAN), every
    page: {serial: fields}; a serial listed twice fails the test."""
    rows, after = {}, []
    while True:
        p = node.cli("cert", "list", "--limit", "1000", *args, *after, check=True)
        more = None
        if "SERIAL" not in p.stdout:
            return rows
        for fields, line in parse_table(p.stdout, "SERIAL"):
            if line.startswith("more:"):
                more = fields[-1]
                continue
            s = norm(fields[0])
            assert s not in rows, f"{s} listed twice by cert list:\n{p.stdout}"
            rows[s] = fields
        if more is None:
            return rows
        after = ["--after", more]


class Https(http.client.HTTPSConnection):
    """HTTPS to an address, verifying the server as a host name (the PSN's
    EST certificate names its host, not its address)."""

    def __init__(self, ip, port, name, ctx, timeout):
        super().__init__(ip, port, context=ctx, timeout=timeout)
        self._name = name

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._name)


def simpleenroll(psn, ctx, auth, der, timeout):
    """One simpleenroll of the DER CSR at psn over a new connection with
    ctx and HTTP Basic auth (base64 of user:password): (response, body)."""
    c = Https(psn.address.ip, EST_PORT, psn.hostname, ctx, timeout)
    try:
        c.request("POST", "/.well-known/est/simpleenroll", body=base64.encodebytes(der),
                  headers={"Content-Type": "application/pkcs10",
                           "Authorization": "Basic " + auth})
        r = c.getresponse()
        return r, r.read()
    finally:
        c.close()


class EstClient:
    """simpleenroll with HTTP Basic against one PSN, the way a device does
    it: a fresh key and CSR each time, the answer's certificate checked to
    hold that key and that name."""

    def __init__(self, psn, user, password):
        self.psn = psn
        self.ctx = ssl.create_default_context(cafile=str(psn.datadir / "ca" / "root-ca.crt"))
        self.auth = base64.b64encode(f"{user}:{password}".encode()).decode()

    def enroll(self, cn):
        key, der = make_csr(cn)
        r, body = simpleenroll(self.psn, self.ctx, self.auth, der, ENROLL_TIMEOUT)
        if r.status != 200:
            raise AssertionError(f"{cn} at {self.psn.hostname}: HTTP {r.status} {body[:200]!r}")
        certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
        assert len(certs) == 1, f"{cn}: {len(certs)} certificates"
        cert = certs[0]
        assert cert.public_key().public_numbers() == key.public_key().public_numbers(), cn
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        return cert


class Load:
    """n enrollments spread over psns (round robin), `threads` clients per
    PSN, run in threads from the start.

    got: {cn: (host, serial, cert, phase)}, phase = how many times mark()
    (or fault()) had been called when the request started, so a test
    splits the load at its faults; failures: one line each (a client does
    not retry).  pace: seconds a client waits after each request, to
    spread a bounded load over a longer fault.  hold: the last `hold`
    requests of each PSN wait for release() before they start, so that
    some requests surely start after a point the test chooses (a
    switch-over) however fast the rest went."""

    def __init__(self, psns, n, user, password, threads=LOAD_THREADS, pace=0.0, hold=0):
        self.clients = {psn.hostname: EstClient(psn, user, password) for psn in psns}
        self.jobs = [(psns[i % len(psns)], f"load-{i:03d}") for i in range(n)]
        self.held = {cn for _, cn in self.jobs[len(self.jobs) - hold * len(psns):]} if hold else set()
        self.n, self.pace = n, pace
        self.lock = threading.Lock()
        self.got, self.failures = {}, []
        self.phase = 0
        self.released = threading.Event()
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self._worker, daemon=True)
                        for _ in range(threads * len(psns))]
        for t in self.threads:
            t.start()
        psns[0].lab.on_close(self.halt)

    def halt(self):
        """No new request starts (a failed test's teardown)."""
        with self.lock:
            self.jobs.clear()
        self.released.set()
        for t in self.threads:
            t.join(ENROLL_TIMEOUT * 2)

    def _worker(self):
        while True:
            with self.lock:
                if not self.jobs:
                    return
                psn, cn = self.jobs.pop(0)
            if cn in self.held:
                self.released.wait(HOLD_TIMEOUT)
            phase = self.phase
            try:
                cert = self.clients[psn.hostname].enroll(cn)
            except Exception as e:  # noqa: BLE001 (every failure counts)
                with self.lock:
                    self.failures.append(f"{cn} at {psn.hostname} (phase {phase}): {e!r}")
            else:
                with self.lock:
                    self.got[cn] = (psn.hostname, norm(cert.serial_number), cert, phase)
            if self.pace:
                time.sleep(self.pace)

    def done(self, phase=None, host=None):
        """Requests finished well (in that phase, at that host)."""
        with self.lock:
            return len([v for v in self.got.values()
                        if (phase is None or v[3] == phase) and (host is None or v[0] == host)])

    def wait_done(self, k, phase=None, host=None):
        """Until k requests have finished (well or not; with phase or
        host: well, in that phase, at that host)."""
        if phase is None and host is None:
            pred = lambda: len(self.got) + len(self.failures) >= k  # noqa: E731
        else:
            pred = lambda: self.done(phase, host) >= k  # noqa: E731
        wait_for(pred, ENROLL_TIMEOUT * 4, f"{k} enrollments (phase {phase}, {host})",
                 detail=lambda: "\n".join(self.failures))

    def mark(self):
        """A new phase from now on (a fault, a switch-over)."""
        self.phase += 1

    def fault(self):
        self.mark()

    def release(self):
        self.released.set()

    def join(self):
        self.release()
        for t in self.threads:
            t.join(ENROLL_TIMEOUT * self.n)
            assert not t.is_alive(), "an EST client thread hangs"
        self.seconds = time.monotonic() - self.t0
