"""EST interoperability (issue 4): independent EST clients against a
running PSN (`psn run`, EST on the PSN's own address).  curl is exercised
in test_est_psn.py; here strongSwan's `pki --estca/--est` and the Go EST
client `estclient` (github.com/globalsign/est, built by
deploy/install-deps into build/tools/bin).

The clients verify the server's name (psn1) against its certificate, so
each runs in a private mount namespace whose /etc/hosts maps psn1 to the
PSN's loopback address: nothing on the machine changes."""

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_est_psn as est  # noqa: E402  (a module: pytest does not re-collect its tests)
from iselab import (BUILD, clean_env, exe, lab, openssl, run, split_pem,  # noqa: E402,F401
                    wait_for)

USER, PASSWORD = "interop", "interop-password-1"
URL = "https://psn1:8084"  # pki appends /.well-known/est/<operation>


def estclient_path():
    for d in (BUILD / "tools" / "bin", BUILD.parent / "tools" / "bin",
              Path(__file__).resolve().parents[2] / "build" / "tools" / "bin"):
        if (d / "estclient").exists():
            return str(d / "estclient")
    return shutil.which("estclient")


def start_psn(lab, *extra):
    """A joined PSN whose own `psn run` serves EST, with a Basic user."""
    pan, psn = est.joined_psn(lab)
    pan.user_add(USER, PASSWORD)
    psn.start(*extra)
    psn.wait_events(pan)
    wait_for(lambda: est.tcp_listening(psn.address.ip), est.START_TIMEOUT,
             "psn run to serve EST", detail=psn.log_text)
    hosts = lab.tmp / "hosts"
    hosts.write_text(f"{psn.address.ip} psn1\n" + Path("/etc/hosts").read_text())
    return lab, pan, psn, hosts


@pytest.fixture
def running_psn(lab):
    return start_psn(lab)


def in_ns(hosts, argv, **kw):
    """argv in a private mount namespace where psn1 resolves to the PSN."""
    return run(["unshare", "--mount", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *argv],
               env=clean_env(), **kw)


def csr_pem(lab, cn, name):
    key, csr = lab.tmp / f"{name}.key", lab.tmp / f"{name}.csr"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-subj", f"/CN={cn}", "-out", str(csr))
    return csr


def test_strongswan_pki(lab):
    # strongSwan's pki 5.9 decodes base64 without skipping line breaks:
    # this PSN answers in one line (est.base64-line-length=0).
    lab, pan, psn, hosts = start_psn(lab, "--set", "est.base64-line-length=0")
    root = psn.datadir / "ca/root-ca.crt"
    # cacerts: pki --estca stores the CA certificates it got.
    out = lab.tmp / "sw-ca"
    out.mkdir()
    p = in_ns(hosts, ["pki", "--estca", "--url", URL, "--cacert", str(root),
                      "--caout", str(out / "ca.pem"), "--outform", "pem", "--force"])
    assert p.returncode == 0, p.stdout + p.stderr
    got = "".join(f.read_text() for f in sorted(out.iterdir()))
    assert "BEGIN CERTIFICATE" in got
    names = [openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253",
                     input=pem).stdout.strip() for pem in split_pem(got)]
    assert any("Endpoint Sub CA - psn1" in n for n in names), names
    assert any("Root CA - pan1" in n for n in names), names
    # simpleenroll with HTTP Basic.
    csr = csr_pem(lab, "sw-device", "sw-device")
    der = lab.tmp / "sw-device.csr.der"
    openssl("req", "-in", str(csr), "-outform", "DER", "-out", str(der))
    p = in_ns(hosts, ["pki", "--est", "--url", URL, "--cacert", str(root),
                      "--userpass", f"{USER}:{PASSWORD}", "--in", str(der), "--outform", "pem"])
    assert p.returncode == 0, p.stdout + p.stderr
    certs = split_pem(p.stdout)
    assert certs, p.stdout + p.stderr
    cert = lab.tmp / "sw-device.pem"
    cert.write_text(certs[0])
    est.check_issued(lab, psn, cert, "sw-device", queued=False)
    # A wrong password is refused, and pki says so.
    p = in_ns(hosts, ["pki", "--est", "--url", URL, "--cacert", str(root),
                      "--userpass", f"{USER}:wrong", "--in", str(der), "--outform", "pem"])
    assert p.returncode != 0
    assert not split_pem(p.stdout)


def test_go_estclient(running_psn):
    lab, pan, psn, hosts = running_psn
    client = estclient_path()
    if client is None:
        if os.environ.get("CI"):
            pytest.fail("estclient is not built (deploy/install-deps builds it)")
        pytest.skip("estclient is not built; run deploy/install-deps")
    root = psn.datadir / "ca/root-ca.crt"
    common = ["-server", "psn1:8084", "-explicit", str(root)]
    # cacerts
    cacerts = lab.tmp / "go-cacerts.pem"
    p = in_ns(hosts, [client, "cacerts", *common, "-out", str(cacerts)])
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(split_pem(cacerts.read_text())) == 3
    # csrattrs
    p = in_ns(hosts, [client, "csrattrs", *common])
    assert p.returncode == 0, p.stdout + p.stderr
    # enroll with Basic
    csr = csr_pem(lab, "go-device", "go-device")
    cert = lab.tmp / "go-device.pem"
    p = in_ns(hosts, [client, "enroll", *common, "-user", USER, "-pass", PASSWORD,
                      "-csr", str(csr), "-out", str(cert)])
    assert p.returncode == 0, p.stdout + p.stderr
    est.check_issued(lab, psn, cert, "go-device", queued=False)
    # enroll with the PSN's EST client certificate (TLS client auth)
    key = est.plain_client_key(lab, psn)
    csr2 = csr_pem(lab, "go-device2", "go-device2")
    cert2 = lab.tmp / "go-device2.pem"
    p = in_ns(hosts, [client, "enroll", *common, "-certs", str(psn.datadir / "ca/est-client.crt"),
                      "-key", str(key), "-csr", str(csr2), "-out", str(cert2)])
    assert p.returncode == 0, p.stdout + p.stderr
    est.check_issued(lab, psn, cert2, "go-device2", queued=False)
    # reenroll: the device renews with the certificate it holds
    csr3 = lab.tmp / "go-device-renew.csr"
    openssl("req", "-new", "-key", str(lab.tmp / "go-device.key"), "-subj", "/CN=go-device",
            "-out", str(csr3))
    renewed = lab.tmp / "go-device-renewed.pem"
    p = in_ns(hosts, [client, "reenroll", *common, "-certs", str(cert),
                      "-key", str(lab.tmp / "go-device.key"), "-csr", str(csr3),
                      "-out", str(renewed)])
    assert p.returncode == 0, p.stdout + p.stderr
    est.check_issued(lab, psn, renewed, "go-device", queued=False)
    # serverkeygen: the key comes back with its certificate
    csr4 = csr_pem(lab, "go-keygen", "go-keygen")
    kg_cert, kg_key = lab.tmp / "go-keygen.pem", lab.tmp / "go-keygen.key.out"
    p = in_ns(hosts, [client, "serverkeygen", *common, "-user", USER, "-pass", PASSWORD,
                      "-csr", str(csr4), "-out", str(kg_cert), "-keyout", str(kg_key)])
    assert p.returncode == 0, p.stdout + p.stderr
    est.check_issued(lab, psn, kg_cert, "go-keygen", queued=False)
    pub_cert = openssl("x509", "-in", str(kg_cert), "-noout", "-pubkey").stdout
    pub_key = openssl("pkey", "-in", str(kg_key), "-pubout").stdout
    assert pub_cert == pub_key
