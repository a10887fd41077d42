"""pan run and its admin commands on real executables (issue 3): join
strings, the node list, garbage on the messaging port, heartbeats and the
Queue Link Error alarm, node removal, a PAN killed and restarted, 20 PSNs
joining at once, and the CA certificate tree."""

import os
import re
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import (BUILD, EVENTS_PORT, HEARTBEAT_TIMEOUT, LINK_TIMEOUT,  # noqa: E402
                    MESSAGING_PORT, NODE_LIST_COLUMNS, _pid_names, cert_serial, cert_subject, lab,  # noqa: F401
                    openssl, run, split_pem, tree_snapshot, verify, wait_for)

JOIN_LINE = r"iselab1\.[0-9a-f]{16}\.[0-9a-f]{64}\.[0-9a-f]{64}@{}:8671"
TIMESTAMP = r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}"
ZMTP_SIGNATURE = b"\xff" + b"\0" * 8 + b"\x7f"


def zmtp_greeting(mechanism=b"CURVE", major=3, minor=0, as_server=0):
    """A ZMTP 3 greeting (RFC 23/ZMTP section "The greeting"): 64 bytes."""
    return (ZMTP_SIGNATURE + bytes([major, minor]) + mechanism.ljust(20, b"\0")
            + bytes([as_server]) + b"\0" * 31)


def started(lab, *names, hierarchy=None, session=None):
    """A running PAN, and running joined nodes for names (psn* / san*)."""
    pan = lab.pan(hierarchy=hierarchy)
    nodes = {}
    for name in names:
        role = name.rstrip("0123456789")
        js = pan.node_add(name, role, session=session)
        n = lab.psn(name) if role == "psn" else lab.san(name)
        n.join(js, check=True)
        n.start()
        nodes[name] = n
    for name in names:
        pan.wait_state(name, "connected")
    return pan, nodes


def block_of(text, cn):
    """The lines of a `pan ca certs` entry: from the line naming cn to the
    next certificate."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if cn in line:
            out = [line]
            for nxt in lines[i + 1:]:
                if "Certificate Services" in nxt:
                    break
                out.append(nxt)
            return "\n".join(out)
    raise AssertionError(f"{cn} not in:\n{text}")


def depth_of(text, cn):
    """Indentation (column) of cn in the tree, a proxy for its depth."""
    for line in text.splitlines():
        if cn in line:
            return line.index(cn)
    raise AssertionError(f"{cn} not in:\n{text}")


def test_node_add_join_string(lab):
    pan = lab.pan()
    p = pan.cli("node", "add", "psn1", "--role", "psn", check=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"node add prints one line:\n{p.stdout}"
    assert re.fullmatch(JOIN_LINE.replace("{}", re.escape(pan.address.ip)), lines[0].strip()), lines[0]
    js = pan.node_add("psn2", "psn")
    assert js.pan_key == pan.curve_public_hex
    assert (js.host, js.port) == (pan.address.ip, MESSAGING_PORT)
    js2 = pan.node_add("san1", "san", ttl="10m", session="off")
    assert js2.token_id != js.token_id and js2.secret != js.secret
    # Bad requests are refused and make no token.
    for args in (["psn_1", "--role", "psn"], ["psn3", "--role", "pan"],
                 ["psn3", "--role", "psn", "--ttl", "8d"],
                 ["psn3", "--role", "psn", "--ttl", "soon"],
                 ["psn3", "--role", "psn", "--session-services", "maybe"],
                 ["psn3"]):
        p = pan.cli("node", "add", *args)
        assert p.returncode > 0, f"node add {args} succeeded:\n{p.stdout}"
        assert p.stderr.strip(), f"node add {args}: no message"
        assert not re.search(r"iselab1\.", p.stdout)


def test_admin_commands_need_the_daemon(lab):
    pan = lab.pan(start=False)
    for args in (["node", "list"], ["node", "add", "psn1", "--role", "psn"],
                 ["node", "remove", "psn1"], ["ca", "certs"], ["alarms"]):
        p = pan.cli(*args, timeout=30)
        assert p.returncode > 0, args
        assert "running" in p.stderr, f"{args}: {p.stderr}"


def test_control_socket_bad_input(lab):
    """The admin commands' socket (0600: the daemon's user only) answers
    what it can, drops what it cannot answer, and goes on serving."""
    pan = lab.pan()
    ctl = str(BUILD / "tests" / "tools" / "ctl")
    for kind, want in (("garbage", "status 1: pan: malformed control request"),
                       ("not-control", "status 1: pan: not a control request"),
                       ("dealer", "no answer")):
        p = run([ctl, "--raw", kind, str(pan.datadir)], check=True)
        assert want in p.stdout, (kind, p.stdout, p.stderr)
        assert "pan1" in pan.cli("status", check=True).stdout
    assert "dropped a request without the REQ envelope" in pan.log_text()
    assert pan.running


def test_pan_run_refuses_second_instance(lab):
    pan = lab.pan()
    p = pan.cli("run", "--passphrase-file", pan.passfile, *pan.run_args, timeout=30)
    assert p.returncode > 0
    assert re.search(rf"already running.*pid {pan.proc.pid}", p.stderr), p.stderr
    assert pan.running
    pan.stop()


def test_node_list_table(lab):
    pan = lab.pan()
    assert pan.node_list() == {}
    for name, role, session in [("psn1", "psn", "off"), ("psn2", "psn", "on"), ("san1", "san", None)]:
        js = pan.node_add(name, role, session=session)
        n = lab.psn(name) if role == "psn" else lab.san(name)
        n.join(js, check=True)
    out = pan.cli("node", "list", check=True).stdout
    header = out.split("\n")[0]
    assert header.split() == NODE_LIST_COLUMNS, out
    rows = pan.node_list()
    assert set(rows) == {"psn1", "psn2", "san1"}, out
    assert rows["psn1"][1:4] == ["psn", "off", "registered"], out
    assert rows["psn2"][1:4] == ["psn", "on", "registered"], out
    assert rows["san1"][1] == "san" and rows["san1"][3] == "registered", out
    # CERT-EXPIRY is the node's CA certificate's notAfter.
    end = openssl("x509", "-in", str(lab.tmp / "psn1/ca/endpoint-sub-ca.crt"), "-noout",
                  "-enddate", "-dateopt", "iso_8601", check=None)
    if end.returncode == 0:
        day = end.stdout.split("=", 1)[1][:10]
    else:
        end = openssl("x509", "-in", str(lab.tmp / "psn1/ca/endpoint-sub-ca.crt"), "-noout",
                      "-enddate")
        day = time.strftime("%Y-%m-%d", time.strptime(end.stdout.split("=", 1)[1].strip(),
                                                      "%b %d %H:%M:%S %Y %Z"))
    line = next(ln for ln in out.splitlines() if ln.split()[:1] == ["psn1"])
    assert day in line, f"psn1 CERT-EXPIRY should be {day}:\n{out}"
    assert line.index(day) >= header.index("CERT-EXPIRY") - 2, out


def test_garbage_on_messaging_port(lab):
    pan = lab.pan()
    addr = (pan.address.ip, MESSAGING_PORT)
    held = []

    def conn(data=b"", keep=False, port=MESSAGING_PORT):
        s = socket.create_connection((pan.address.ip, port), timeout=5)
        try:
            if data:
                s.sendall(data)
        except OSError:
            pass   # the PAN may hang up on us mid-way: that is fine
        if keep:
            held.append(s)
        else:
            s.close()

    conn(os.urandom(4096))
    conn(os.urandom(1 << 20))
    conn(b"GET / HTTP/1.1\r\nHost: pan1\r\n\r\n")
    conn(b"\0" * 64)
    conn(b"\xff" * 64)
    conn(zmtp_greeting(b"NULL"))                      # wrong mechanism
    conn(zmtp_greeting(b"PLAIN"))
    conn(zmtp_greeting(major=1))                       # old protocol version
    conn(zmtp_greeting(major=99))
    conn(zmtp_greeting(as_server=1))
    # A CURVE greeting, then frames announcing absurd sizes.
    conn(zmtp_greeting() + b"\x06" + (2 ** 63 - 1).to_bytes(8, "big") + os.urandom(64))
    conn(zmtp_greeting() + b"\x02" + (2 ** 40).to_bytes(8, "big") + os.urandom(64))
    conn(zmtp_greeting() + b"\x04\xff" + os.urandom(255))          # a garbled HELLO
    conn(os.urandom(4096), port=EVENTS_PORT)
    conn(zmtp_greeting(b"NULL"), port=EVENTS_PORT)
    # Half-open connections that never finish their greeting.
    for i in range(40):
        conn(b"" if i % 2 else ZMTP_SIGNATURE[:5], keep=True)
    try:
        assert pan.running, "PAN died on garbage"
        # The PAN still serves: a PSN joins and heartbeats meanwhile.
        js = pan.node_add("psn1", "psn")
        psn = lab.psn("psn1")
        psn.join(js, check=True)
        psn.start()
        pan.wait_state("psn1", "connected")
        # More garbage while psn1 is connected does not disturb it.
        for _ in range(20):
            conn(os.urandom(2048))
            conn(zmtp_greeting() + b"\x06" + (2 ** 62).to_bytes(8, "big"))
        time.sleep(HEARTBEAT_TIMEOUT + 1)
        assert pan.node_state("psn1") == "connected"
    finally:
        for s in held:
            s.close()
    assert pan.running
    socket.create_connection(addr, timeout=5).close()
    js = pan.node_add("psn2", "psn")
    lab.psn("psn2").join(js, check=True)
    pan.stop()


def test_heartbeats_queue_link_error(lab):
    pan, nodes = started(lab, "psn1", "psn2")
    psn = nodes["psn1"]
    assert "Queue Link Error" not in pan.alarms()
    psn.kill_group()
    t0 = time.monotonic()
    pan.wait_state("psn1", "disconnected")
    print(f"psn1 disconnected after {time.monotonic() - t0:.1f}s")

    def active():
        return [ln for ln in pan.alarms().splitlines() if "Queue Link Error" in ln and "psn1" in ln]

    lines = wait_for(active, LINK_TIMEOUT, "a Queue Link Error alarm for psn1",
                     detail=lambda: pan.alarms(all=True))
    assert len(lines) == 1, lines
    assert re.search(r"major", lines[0], re.I), lines[0]
    header = pan.alarms().split("\n")[0].split()
    assert header[:4] == ["TIME", "SEVERITY", "NODE", "ALARM"], header
    assert pan.node_state("psn2") == "connected"
    assert not any("psn2" in ln for ln in pan.alarms().splitlines()[1:])
    # The link comes back: connected again, the alarm cleared.
    psn.start()
    pan.wait_state("psn1", "connected")
    wait_for(lambda: not active(), LINK_TIMEOUT, "the psn1 alarm to clear",
             detail=lambda: pan.alarms())
    hist = [ln for ln in pan.alarms(all=True).splitlines()
            if "Queue Link Error" in ln and "psn1" in ln]
    assert len(hist) == 1, hist
    assert len(re.findall(TIMESTAMP, hist[0])) >= 2, f"no cleared time: {hist[0]}"
    assert "CLEARED" in pan.alarms(all=True).split("\n")[0]


def test_node_remove(lab):
    pan, nodes = started(lab, "psn1", "psn2")
    psn = nodes["psn1"]
    before = pan.ca_certs()
    assert "revoked" not in block_of(before, "Endpoint Sub CA - psn1").lower()
    p = pan.cli("node", "remove", "psn1", check=True)
    assert re.search(r"revoked", p.stdout + p.stderr, re.I), p.stdout + p.stderr
    rows = pan.node_list()
    assert "psn1" not in rows or rows["psn1"][3] == "removed", rows
    # The tree shows psn1's sub CA as revoked, or no longer shows it.
    certs = pan.ca_certs()
    assert ("Endpoint Sub CA - psn1" not in certs
            or "revoked" in block_of(certs, "Endpoint Sub CA - psn1").lower()), certs
    assert "revoked" not in block_of(certs, "Endpoint Sub CA - psn2").lower(), certs
    # psn1 is cut off: its link goes down and stays down, psn2 is unaffected.
    wait_for(lambda: re.search(r"disconnected", psn.status(check=None).stdout),
             LINK_TIMEOUT, "psn1 to see its PAN link down",
             detail=lambda: psn.status(check=None).stdout)
    deadline = time.monotonic() + HEARTBEAT_TIMEOUT + 2
    while time.monotonic() < deadline:
        assert pan.node_state("psn1") in (None, "removed")
        time.sleep(0.5)
    # A restarted psn1 is still refused.
    psn.stop()
    psn.start()
    time.sleep(HEARTBEAT_TIMEOUT)
    assert pan.node_state("psn1") in (None, "removed")
    assert pan.node_state("psn2") == "connected"
    # Removing it again, or a host never added, is an error.
    p = pan.cli("node", "remove", "psn1")
    assert p.returncode > 0 and "psn1" in p.stderr, p.stderr
    p = pan.cli("node", "remove", "nosuch")
    assert p.returncode > 0 and "nosuch" in p.stderr, p.stderr


def test_pan_sigkill_restart(lab):
    pan, nodes = started(lab, "psn1", "psn2", "san1")
    rows = {h: tuple(r[:3]) for h, r in pan.node_list().items()}
    certs, count = pan.ca_certs(), pan.cert_count()
    snaps = {h: tree_snapshot(n.datadir / "ca") for h, n in nodes.items()}
    pan.kill_group()
    pan.start()
    for h in nodes:
        pan.wait_state(h, "connected")
    after = pan.node_list()   # fails on a host listed twice
    assert {h: tuple(r[:3]) for h, r in after.items()} == rows
    assert pan.ca_certs() == certs, "certificates changed after the restart"
    assert pan.cert_count() == count
    for h, n in nodes.items():
        assert tree_snapshot(n.datadir / "ca") == snaps[h], f"{h} got new certificates"
        assert n.running
        # The node sees its link back too, without being touched.
        wait_for(lambda: re.search(r"PAN link:\s+connected", n.status().stdout), LINK_TIMEOUT,
                 f"{h} to report its PAN link connected", detail=lambda: n.status().stdout)
    # Twice more, for good measure: still one record each.
    for _ in range(2):
        pan.kill_group()
        pan.start()
        for h in nodes:
            pan.wait_state(h, "connected")
    assert set(pan.node_list()) == set(nodes)
    assert pan.ca_certs() == certs


def test_pan_sigkill_leaves_no_orphans(lab):
    pan = lab.pan()
    assert len(pan.group_pids()) >= 2, "no CA signer process beside pan run"
    pan.kill()
    wait_for(lambda: not pan.group_pids(), 10,
             "the CA signer to exit after its parent was SIGKILLed",
             detail=lambda: _pid_names(pan.group_pids()))
    # A new daemon starts over the stale pid file and sockets.
    pan.start()
    pan.stop()


def test_twenty_psns_join_at_once(lab, capsys):
    pan = lab.pan()
    names = [f"psn{i:02d}" for i in range(1, 21)]
    tokens = {n: pan.node_add(n, "psn") for n in names}
    psns = {n: lab.psn(n) for n in names}
    t0 = time.monotonic()
    procs = {n: psns[n].join_popen(tokens[n]) for n in names}
    deadline = t0 + 300
    for n, p in procs.items():
        p.wait(max(1, deadline - time.monotonic()))
    took = time.monotonic() - t0
    failed = {n: psns[n].join_out.read_text() for n, p in procs.items() if p.returncode != 0}
    assert not failed, f"{len(failed)} joins failed: {failed}"
    with capsys.disabled():
        print(f"\n20 PSNs joined concurrently in {took:.2f}s")
    rows = pan.node_list()
    assert set(rows) == set(names)
    assert all(r[3] == "registered" for r in rows.values()), rows
    serials = {cert_serial(psns[n].datadir / "ca/endpoint-sub-ca.crt") for n in names}
    assert len(serials) == 20
    certs = pan.ca_certs()
    for n in names:
        assert f"Endpoint Sub CA - {n}" in certs


@pytest.mark.parametrize("hierarchy", ["rfc6960", "legacy"])
def test_ca_certs_tree(lab, hierarchy):
    pan = lab.pan(hierarchy=hierarchy)
    nodes = {}
    for name, role in [("psn1", "psn"), ("psn2", "psn"), ("san1", "san")]:
        n = lab.psn(name) if role == "psn" else lab.san(name)
        n.join(pan.node_add(name, role), check=True)
        nodes[name] = n
    text = pan.ca_certs()
    flat = text.lower().replace(":", "")
    d_root = depth_of(text, "Certificate Services Root CA - pan1")
    d_node = depth_of(text, "Certificate Services Node CA - pan1")
    assert d_root < d_node, text
    assert depth_of(text, "Certificate Services Node CA - san1") == d_node, text
    for psn in ("psn1", "psn2"):
        d_sub = depth_of(text, f"Certificate Services Endpoint Sub CA - {psn}")
        d_resp = depth_of(text, f"Certificate Services OCSP Responder - {psn}")
        assert d_sub > d_node, text
        if hierarchy == "rfc6960":
            assert d_resp > d_sub, f"{psn} responder not under its sub CA:\n{text}"
        else:
            assert d_resp == d_sub, f"{psn} legacy responder not under the Node CA:\n{text}"
        # Serials, key type and expiry of what the PSN holds.
        d = nodes[psn].datadir / "ca"
        shown = [("endpoint-sub-ca.crt", "Endpoint Sub CA")]
        # An rfc6960 responder is made on the PSN; the PAN learns its serial
        # only when issued certificates flow back (DESIGN.md 3, outbox).
        if hierarchy == "legacy":
            shown.append(("ocsp-responder.crt", "OCSP Responder"))
        for f, cn in shown:
            serial = cert_serial(d / f)
            assert serial.lstrip("0") in flat, f"{psn} {f} serial {serial} not shown:\n{text}"
            block = block_of(text, f"{cn} - {psn}")
            assert re.search(r"p-?256|prime256v1|secp256r1", block, re.I), block
            assert re.search(r"\d{4}-\d{2}-\d{2}", block), block
    serial = cert_serial(nodes["san1"].datadir / "ca/node-ca.crt")
    assert serial.lstrip("0") in flat, text
    serial = cert_serial(pan.datadir / "ca/root-ca.crt")
    assert serial.lstrip("0") in flat, text

    # --pem: every certificate of the tree, each verifying strictly.
    pem = pan.ca_certs(pem=True)
    blocks = split_pem(pem)
    assert blocks, pem
    bundle = lab.tmp / "bundle.pem"
    bundle.write_text("".join(blocks))
    subjects = set()
    for i, b in enumerate(blocks):
        f = lab.tmp / f"tree-{i}.pem"
        f.write_text(b)
        subjects.add(cert_subject(f))
        p = verify(pan.datadir / "ca/root-ca.crt", f, untrusted=bundle)
        assert p.returncode == 0, f"{cert_subject(f)}: {p.stdout}{p.stderr}"
    # At least the PAN's own chain; whatever else it exports must verify too.
    want = {"CN=Certificate Services Root CA - pan1", "CN=Certificate Services Node CA - pan1"}
    assert want <= subjects, subjects


def cert_list(pan, *args, check=True):
    """`pan cert list ARGS`: rows (fields) and the cursor of a next page."""
    p = pan.cli("cert", "list", *args, check=check)
    rows, after = [], None
    for fields, line in [(ln.split(), ln) for ln in p.stdout.splitlines()[1:] if ln.strip()]:
        if line.startswith("more:"):
            after = fields[-1]
        else:
            rows.append(fields)
    assert p.stdout.split()[:2] == ["SERIAL", "SUBJECT"], p.stdout
    return rows, after


def test_cert_list_and_show(lab):
    pan = lab.pan()
    nodes = {}
    for name, role in [("psn1", "psn"), ("san1", "san")]:
        n = lab.psn(name) if role == "psn" else lab.san(name)
        n.join(pan.node_add(name, role), check=True)
        nodes[name] = n
    rows, after = cert_list(pan)
    assert after is None
    serials = [r[0] for r in rows]
    assert len(serials) == len(set(serials)), rows
    sub = cert_serial(nodes["psn1"].datadir / "ca/endpoint-sub-ca.crt").lstrip("0")
    san = cert_serial(nodes["san1"].datadir / "ca/node-ca.crt").lstrip("0")
    assert {sub, san} <= {s.lstrip("0") for s in serials}, rows
    # Pages of one: the same records, in the same order, each once.
    paged, after, pages = [], None, 0
    while True:
        page, after = cert_list(pan, "--limit", "1", *(["--after", after] if after else []))
        paged += [r[0] for r in page]
        pages += 1
        assert pages <= len(serials) + 1
        if after is None:
            break
    assert paged == serials
    # Nothing issued by psn1 yet (it has not run); everything else by pan1.
    assert cert_list(pan, "--node", "psn1")[0] == []
    assert len(cert_list(pan, "--node", "pan1")[0]) == len(serials)
    # Revoked: after removal, san1's Node CA.
    pan.cli("node", "remove", "san1", check=True)
    revoked = [r[0].lstrip("0") for r in cert_list(pan, "--status", "revoked")[0]]
    assert revoked == [san], revoked
    assert san not in [r[0].lstrip("0") for r in cert_list(pan, "--status", "good")[0]]
    assert cert_list(pan, "--status", "hold")[0] == []
    # show: details and the PEM the node holds; colons and case accepted.
    colon = ":".join(san[i:i + 2] for i in range(0, len(san), 2)).upper() if len(san) % 2 == 0 else san
    p = pan.cli("cert", "show", colon, check=True)
    assert "Status:        revoked" in p.stdout, p.stdout
    assert "Issuer node:   pan1" in p.stdout and "Profile:       node-ca" in p.stdout, p.stdout
    assert split_pem(p.stdout)[0].strip() == (nodes["san1"].datadir / "ca/node-ca.crt").read_text().strip()
    # Bad input: usage errors (2), an unknown serial (1).
    for args in (["list", "--status", "bogus"], ["list", "--limit", "0"], ["list", "--limit", "x"],
                 ["list", "--after", "zz"], ["list", "--nope"], ["show"], ["show", "xyz"],
                 ["show", "11" * 21], ["frob"]):
        p = pan.cli("cert", *args)
        assert p.returncode == 2, f"{args}: {p.returncode} {p.stdout}{p.stderr}"
        assert "pan cert" in p.stderr, p.stderr
    p = pan.cli("cert", "show", "0123456789abcdef")
    assert p.returncode == 1 and "no certificate" in p.stderr, p.stderr
    assert pan.running
    pan.stop()
