"""bench-smoke: the EST load generator and the ceiling server work, cheaply
enough for every test run (the benchmark itself is `ninja -C BUILD bench`,
docs/PERFORMANCE.md).  A PAN and a joined PSN running `psn run`; est_bench
makes 20 enrollments at concurrency 4 with the PSN's EST client
certificate and must report 20 good answers and 0 errors; the issued
certificates are in the PSN's store.  est_bench --handshake-only against
tls_ceiling likewise.  And both must be able to fail: without a client
certificate every request is an error, and the exit status says so."""

import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import BUILD, clean_env, lab, tail, wait_for  # noqa: E402,F401

EST_BENCH = str(BUILD / "tests" / "bench" / "est_bench")
TLS_CEILING = str(BUILD / "tests" / "bench" / "tls_ceiling")
# The ceiling listens on its own address, on 8084 (allocate_address() found
# that port free there and holds the address for us).
EST_PORT = CEILING_PORT = 8084


def result(p):
    m = re.search(r"^RESULT (.*)$", p.stdout, re.M)
    assert m, f"no RESULT line (exit {p.returncode}):\n{p.stdout}\n{p.stderr}"
    return dict(kv.split("=", 1) for kv in m.group(1).split())


def bench(*argv, timeout=300):
    return subprocess.run([EST_BENCH, *argv], capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


def listening(ip, port):
    import socket
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return True
    except OSError:
        return False


def issued_count(psn):
    """Certificate records in the PSN's store (LMDB's own count)."""
    p = subprocess.run(["mdb_stat", "-s", "certs", str(psn.datadir / "store")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    m = re.search(r"Entries: (\d+)", p.stdout)
    assert m, p.stdout
    return int(m.group(1))


def test_bench_smoke(lab):
    pan = lab.pan()
    # Before `psn run`: its services may listen on every address.
    addr = lab.address()
    psn = lab.psn("psn1")
    psn.join(pan.node_add("psn1", "psn"), check=True)
    psn.start()
    wait_for(lambda: listening(psn.address.ip, EST_PORT), 90, "psn run to serve EST",
             detail=psn.log_text)
    d = psn.datadir / "ca"
    trust = ["--cacert", str(d / "root-ca.crt"), "--servername", "psn1"]
    client = [*trust, "--cert", str(d / "est-client.crt"), "--key", str(d / "est-client.key"),
              "--passphrase-file", psn.passfile]
    smoke = ["--count", "20", "--concurrency", "4", "--duration", "120"]

    # 20 enrollments, each checked by est_bench (200, pkcs7-mime, one
    # certificate for the CSR's key), none failing.
    before = issued_count(psn)
    p = bench("--connect", f"{psn.address.ip}:{EST_PORT}", *client, *smoke)
    r = result(p)
    assert p.returncode == 0, p.stdout + p.stderr + psn.diagnostics()
    assert (r["mode"], r["requests"], r["ok"], r["errors"]) == ("enroll", "20", "20", "0"), r
    assert int(r["max_inflight"]) > 1, r
    assert float(r["rate"]) > 0
    # The CA service recorded them (independent of est_bench's check).
    assert issued_count(psn) - before == 20

    # Without a client certificate EST answers 401: all errors, exit 1.
    p = bench("--connect", f"{psn.address.ip}:{EST_PORT}", *trust, "--count", "4")
    r = result(p)
    assert p.returncode == 1 and r["errors"] == "4" and r["ok"] == "0", p.stdout + p.stderr
    assert "status 401" in p.stderr

    # The ceiling server, with the EST server's own certificate and key.
    chain = lab.tmp / "ca-chain.pem"
    chain.write_text((d / "endpoint-sub-ca.crt").read_text() + (d / "chain.pem").read_text())
    out = lab.tmp / "tls_ceiling.out"
    with open(out, "wb") as f:
        srv = subprocess.Popen([TLS_CEILING, "--listen", f"{addr.ip}:{CEILING_PORT}",
                                "--cert", str(d / "est-server.crt"),
                                "--key", str(d / "est-server.key"),
                                "--passphrase-file", psn.passfile,
                                "--root", str(d / "root-ca.crt"), "--chain", str(chain)],
                               stdout=f, stderr=subprocess.STDOUT, env=clean_env(),
                               start_new_session=True)
    lab.children.append(srv)

    def up():
        assert srv.poll() is None, tail(out)
        return listening(addr.ip, CEILING_PORT)
    wait_for(up, 60, "tls_ceiling to listen")
    p = bench("--connect", f"{addr.ip}:{CEILING_PORT}", *client, "--handshake-only", *smoke)
    r = result(p)
    assert p.returncode == 0, p.stdout + p.stderr + tail(out)
    assert (r["mode"], r["ok"], r["errors"]) == ("handshake", "20", "0"), r
    # No client certificate: the ceiling refuses as EST does.
    p = bench("--connect", f"{addr.ip}:{CEILING_PORT}", *trust, "--handshake-only",
              "--count", "3")
    assert p.returncode == 1 and result(p)["errors"] == "3", p.stdout + p.stderr
    srv.terminate()
    assert srv.wait(30) == 0, tail(out)
    # The server counted what the client saw: 20 verified, 3 without.
    text = out.read_text()
    assert "20 verified" in text and "3 without certificate" in text, text
