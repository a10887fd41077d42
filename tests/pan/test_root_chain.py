"""`pan ca replace-root-chain` on real executables (issue 8 item 6,
docs/certificates.md "Replacing the root CA chain"): a new root and Node CA
on the PAN, a running PSN renews its Endpoint Sub CA and its own
certificates with new keys made on the PSN, new enrollments verify to the
new root, what the old chain issued still verifies to the old root."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "psn"))
from iselab import LINK_TIMEOUT, lab, openssl, verify, wait_for  # noqa: E402,F401
import test_est_psn as est  # noqa: E402
from test_ocsp_pan import ocsp, status_of, url_of  # noqa: E402
from test_replication import USER, PASSWORD, enroll_basic, running_psn  # noqa: E402

RENEW_TIMEOUT = 120


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


def test_replace_root_chain_renews_psn(lab):
    pan, psn = running_psn(lab)
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

    # The services run on the new certificates: a new enrollment verifies
    # to the new root, and not to the old one.
    wait_for(lambda: est.tcp_listening(psn.address.ip), est.START_TIMEOUT,
             "psn1 to serve EST again", detail=psn.log_text)
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

    # The PSN that was down renews by itself when it starts again.
    psn2.start()
    ca2 = psn2.datadir / "ca"
    wait_for(lambda: generation(psn2) == "2", RENEW_TIMEOUT, "psn2 to install generation 2",
             detail=psn2.log_text)
    assert pubkey(ca2 / "endpoint-sub-ca.crt") != old_sub2
    untrusted.write_text((ca2 / "chain.pem").read_text())
    assert verify(new_root, ca2 / "endpoint-sub-ca.crt", untrusted=untrusted).returncode == 0


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
