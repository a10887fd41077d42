"""Bad input on the PAN's messaging port (8671) after a real CURVE handshake
(issue 3, "Security and bad input"): garbage, wrong-version, bodiless,
oversized, multi-frame, empty and unhandled messages, and heartbeats forged
for a registered node, sent with tests/tools/zmq_raw.  Each must be counted
under the right reason in `pan status`, logged (at most a line a second per
reason, the rest summed up in the next line) and dropped, while the PAN goes
on answering on the same connection and serving PSNs."""

import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import (BUILD, HEARTBEAT_TIMEOUT, MESSAGING_PORT, Lab,  # noqa: E402
                    lab, run, wait_for)  # noqa: F401

ZRAW = str(BUILD / "tests" / "tools" / "zmq_raw")
# Messages of each kind per burst.
BURST = 20
# pan/messaging.c DROP_LOG_INTERVAL_MS, plus slack.
DROP_LOG_INTERVAL = 1.0
PAST_INTERVAL = DROP_LOG_INTERVAL + 0.3
# pan/messaging.c MESSAGING_WIRE_MAX and common/msg.h MSG_MAX_SIZE.
MSG_MAX_SIZE = 256 * 1024
WIRE_MAX = 2 * MSG_MAX_SIZE
# How long counters may take to show what was sent.
COUNT_TIMEOUT = 30
# zmq_raw exit statuses (its usage text).
ZRAW_OK, ZRAW_LINK, ZRAW_NO_REPLY = 0, 3, 4

# An envelope cut short: version 1, sender "x", then a Heartbeat (field 13,
# length-delimited) announcing 5 bytes of which 2 follow.
TRUNCATED = bytes.fromhex("0801" "1a0178" "6a05" "0801")

# (name, zmq_raw arguments, drop reason in `pan status` and the log, what
# the log line must say); a file argument "@truncated" is written first.
KINDS = [
    ("garbage", ["--garbage", "200"], "malformed", "200 bytes does not unpack"),
    ("hex", ["--hex", "0a0b0c"], "malformed", "3 bytes does not unpack"),
    ("truncated-file", ["--file", "@truncated"], "malformed",
     f"{len(TRUNCATED)} bytes does not unpack"),
    ("wrong-version", ["--wrong-version", "--sender", "zraw-v"], "wrong version",
     "message from 'zraw-v' has protocol version 99"),
    ("no-body", ["--no-body", "--sender", "zraw-nb"], "no body",
     "message from 'zraw-nb' has no body"),
    ("unhandled", ["--unhandled"], "unhandled", "no handler for a 'heartbeat_ack' message"),
    ("empty", ["--empty"], "empty payload", "an empty message"),
    ("frames", ["--frames", "3"], "bad framing", "a message of 4 frames"),
    ("oversized", ["--oversized", str(MSG_MAX_SIZE + 1)], "oversized",
     f"message of {MSG_MAX_SIZE + 1} bytes is over the limit of {MSG_MAX_SIZE}"),
    ("unknown-key", ["--heartbeat", "--sender", "nobody"], "unknown CURVE key",
     "heartbeat for 'nobody' from CURVE key"),
]
# Reasons whose log line names the CURVE key that sent the message.
NAMES_KEY = {"malformed", "wrong version", "no body", "unhandled", "oversized",
             "unknown CURVE key"}


# -- helpers -----------------------------------------------------------------

def zraw(pan, *args, key_of=None, sender=None, timeout_ms=15000, check=None):
    """Run zmq_raw against pan; key_of: a joined node whose CURVE key to
    use (else a fresh one).  Returns the CompletedProcess."""
    argv = [ZRAW, "--connect", pan.address.endpoint(MESSAGING_PORT),
            "--server-key", str(pan.datadir / "curve.pub"), "--timeout", str(timeout_ms)]
    if key_of is not None:
        argv += ["--client-key", str(key_of.datadir / "curve.key"),
                 "--passphrase-file", key_of.passfile]
    if sender:
        argv += ["--sender", sender]
    p = run(argv + list(args), timeout=timeout_ms / 1000 * 3 + 60)
    if check is not None:
        assert p.returncode == check, (f"zmq_raw {' '.join(args)} exited {p.returncode}, "
                                       f"not {check}:\n{p.stdout}{p.stderr}")
    return p


def client_key(p):
    m = re.search(r"handshake ok: client key (\S{40})", p.stdout)
    assert m, f"no handshake line in:\n{p.stdout}{p.stderr}"
    return m.group(1)


def messaging_counters(pan):
    """The 8671 counters of `pan status`: {"received", "heartbeats",
    "joins accepted", "refused", ..., "dropped", reason: n}."""
    p = pan.cli("status", check=True)
    out = {}
    m = re.search(r"^\s*received (\d+), heartbeats (\d+), joins accepted (\d+), "
                  r"refused (\d+)", p.stdout, re.M)
    assert m, f"no message counters in pan status:\n{p.stdout}"
    out["received"], out["heartbeats"], out["joins accepted"], out["refused"] = \
        map(int, m.groups())
    m = re.search(r"^\s*dropped (\d+):(.*)$", p.stdout, re.M)
    assert m, f"no drop counters in pan status:\n{p.stdout}"
    out["dropped"] = int(m.group(1))
    for part in m.group(2).split(","):
        part = part.strip()
        if part:
            name, n = part.rsplit(" ", 1)
            out[name] = int(n)
    return out


def drop_reasons(counters):
    return {k: v for k, v in counters.items()
            if k not in ("received", "heartbeats", "joins accepted", "refused", "dropped")}


def wait_counter(pan, reason, want, before):
    """Until counter reason is before[reason] + want; returns the counters.
    Fails at once if it overshoots."""
    def ok():
        c = messaging_counters(pan)
        assert c[reason] <= before[reason] + want, f"{reason}: {before[reason]} -> {c[reason]}"
        return c if c[reason] == before[reason] + want else None
    return wait_for(ok, COUNT_TIMEOUT, f"{want} more '{reason}' drops",
                    detail=lambda: pan.cli("status").stdout)


class LogMark:
    """The PAN log from a point on."""

    def __init__(self, pan):
        self.pan = pan
        self.offset = len(pan.log_path.read_bytes()) if pan.log_path.exists() else 0

    def lines(self, needle=None):
        text = self.pan.log_path.read_bytes()[self.offset:].decode(errors="replace")
        return [ln for ln in text.splitlines() if needle is None or needle in ln]


def more_since(line):
    m = re.search(r"\((\d+) more since the last line\)", line)
    return int(m.group(1)) if m else 0


def assert_serves(pan):
    """The PAN is alive, answers `pan status`, and answers a new CURVE
    client on 8671 (a join probe is refused with an Error reply)."""
    assert pan.running, f"the PAN died:\n{pan.diagnostics()}"
    pan.cli("status", check=True)
    p = zraw(pan, "--expect-reply", "--probe", "join", check=ZRAW_OK)
    assert re.search(r"^reply: error from 'pan1'", p.stdout, re.M), p.stdout


@pytest.fixture(scope="module")
def mlab(tmp_path_factory):
    """One PAN for the tests of every kind of bad message."""
    lab_ = Lab(tmp_path_factory.mktemp("bad-input"))
    failed = True
    try:
        lab_.pan()
        yield lab_
        failed = False
    finally:
        lab_.close(failed)


# -- tests ---------------------------------------------------------------------

@pytest.mark.parametrize("name,args,reason,says", KINDS, ids=[k[0] for k in KINDS])
def test_bad_message_counted_logged_dropped(mlab, name, args, reason, says):
    pan = mlab.nodes[0]
    args = list(args)
    if "@truncated" in args:
        f = mlab.tmp / "truncated.bin"
        f.write_bytes(TRUNCATED)
        args[args.index("@truncated")] = str(f)
    before = messaging_counters(pan)
    mark = LogMark(pan)
    time.sleep(PAST_INTERVAL)   # the rate limit of this reason has passed

    # A burst, then on the same connection a probe: the PAN still answers.
    t0 = time.monotonic()
    p = zraw(pan, *args, "--count", str(BURST), "--expect-reply", "--probe", "join",
             check=ZRAW_OK)
    burst_s = time.monotonic() - t0
    key = client_key(p)
    assert f"sent {BURST} x" in p.stdout, p.stdout
    assert re.search(r"^reply: error from 'pan1' .*unknown token", p.stdout, re.M), p.stdout
    after = wait_counter(pan, reason, BURST, before)

    # Counted under this reason only; nothing else moved but the probe.
    moved = {k: after[k] - before[k] for k in drop_reasons(after) if after[k] != before[k]}
    assert moved == {reason: BURST}, moved
    assert after["dropped"] - before["dropped"] == BURST
    # "received" counts envelopes that unpacked, the probe and those
    # dropped only after (no handler, unknown key).
    unpacked = BURST if reason in ("unhandled", "unknown CURVE key") else 0
    assert after["received"] - before["received"] == 1 + unpacked
    assert after["refused"] - before["refused"] == 1
    assert after["heartbeats"] == before["heartbeats"]
    assert pan.running

    # Logged, rate-limited: a line a second at most for the burst.
    lines = wait_for(lambda: mark.lines(f"dropped ({reason})"), 10,
                     f"a 'dropped ({reason})' log line")
    assert 1 <= len(lines) <= 2 + int(burst_s / DROP_LOG_INTERVAL), \
        f"{len(lines)} lines for {BURST} drops in {burst_s:.1f}s:\n" + "\n".join(lines)
    assert says in lines[0], lines[0]
    if reason in NAMES_KEY:
        assert key in lines[0], f"the line does not name the sender's key {key}:\n{lines[0]}"
    assert " WARN " in lines[0], lines[0]

    # One more after the interval: its line sums up what was not logged,
    # so that logged lines + suppressed counts account for every drop.
    time.sleep(PAST_INTERVAL)
    zraw(pan, *args, "--count", "1", check=ZRAW_OK)
    wait_counter(pan, reason, BURST + 1, before)
    lines = wait_for(lambda: (lambda ls: ls if len(ls) > len(lines) else None)(
        mark.lines(f"dropped ({reason})")), 10, "the summing-up log line")
    assert len(lines) + sum(more_since(ln) for ln in lines) == BURST + 1, "\n".join(lines)
    assert_serves(pan)


def test_frames_over_the_wire_limit_cut_not_counted(mlab):
    """A frame over the PAN's ZMQ_MAXMSGSIZE: libzmq cuts the connection
    before buffering it (pan/messaging.c says it is not counted); the PAN
    serves on."""
    pan = mlab.nodes[0]
    before = messaging_counters(pan)
    zraw(pan, "--oversized", str(WIRE_MAX + 1), "--count", "3", "--timeout", "3000")
    assert_serves(pan)
    after = messaging_counters(pan)
    assert drop_reasons(after) == drop_reasons(before)
    assert after["received"] - before["received"] == 1   # the probe of assert_serves


def test_tool_fails_when_it_should(mlab):
    """zmq_raw itself can fail: a wrong server key breaks the handshake, and
    a heartbeat from an unknown key gets no answer."""
    pan = mlab.nodes[0]
    p = run([ZRAW, "--connect", pan.address.endpoint(MESSAGING_PORT), "--server-key",
             "11" * 32, "--heartbeat", "--timeout", "3000"], timeout=60)
    assert p.returncode == ZRAW_LINK, p.stdout + p.stderr
    assert "handshake" in p.stderr, p.stderr
    before = messaging_counters(pan)
    p = zraw(pan, "--expect-reply", sender="nobody", timeout_ms=3000, check=ZRAW_NO_REPLY)
    assert "no answer to the heartbeat probe" in p.stderr, p.stderr
    wait_counter(pan, "unknown CURVE key", 1, before)


def blast(pan, count):
    """Every kind of bad message, count of each, each run ending in a probe
    the PAN must answer."""
    for name, args, _, _ in KINDS:
        if "@truncated" in args:
            args = ["--hex", TRUNCATED.hex()]
        zraw(pan, *args, "--count", str(count), "--expect-reply", "--probe", "join",
             check=ZRAW_OK)


def test_psn_joins_and_heartbeats_after_bad_input(lab):
    pan = lab.pan()
    before = messaging_counters(pan)
    blast(pan, 30)
    zraw(pan, "--oversized", str(WIRE_MAX + 1), "--timeout", "3000")
    after = messaging_counters(pan)
    assert after["dropped"] - before["dropped"] == 30 * len(KINDS), after
    assert_serves(pan)

    js = pan.node_add("psn1", "psn")
    psn = lab.psn("psn1")
    psn.join(js, check=True)
    psn.start()
    pan.wait_state("psn1", "connected")
    hb = messaging_counters(pan)["heartbeats"]
    # More bad input while psn1 is connected does not disturb its link.
    t0 = time.monotonic()
    blast(pan, 10)
    time.sleep(max(0.0, HEARTBEAT_TIMEOUT + 1 - (time.monotonic() - t0)))
    assert pan.node_state("psn1") == "connected"
    wait_for(lambda: messaging_counters(pan)["heartbeats"] > hb + 1, 10,
             "psn1's heartbeats to go on")
    assert "Queue Link Error" not in pan.alarms()
    # psn1 sees its link up too.
    assert re.search(r"^PAN link:\s+connected", psn.status().stdout, re.M), psn.status().stdout
    # And a second PSN still joins.
    js = pan.node_add("psn2", "psn")
    lab.psn("psn2").join(js, check=True)
    pan.stop()


def node_row(pan, host):
    row = pan.node_list()[host]
    return row[:4], " ".join(row[4:])


def test_forged_heartbeats_dropped_state_unchanged(lab):
    """Heartbeats claiming to come from psn1 but sent with another CURVE key
    (a fresh one, or psn2's) are dropped and counted; psn1 stays as it was.
    So does a wrong-version heartbeat with psn1's own key.  A heartbeat with
    psn1's key does change it: the forged ones were refused, not lost."""
    pan = lab.pan()
    psn1, psn2 = lab.psn("psn1"), lab.psn("psn2")
    psn1.join(pan.node_add("psn1", "psn"), check=True)
    psn2.join(pan.node_add("psn2", "psn"), check=True)
    psn2.start()
    pan.wait_state("psn2", "connected")
    assert pan.node_state("psn1") == "registered"
    row = node_row(pan, "psn1")
    before = messaging_counters(pan)
    mark = LogMark(pan)

    # A fresh key: unknown, no answer.
    p = zraw(pan, "--heartbeat", "--count", str(BURST), "--expect-reply", sender="psn1",
             check=ZRAW_NO_REPLY, timeout_ms=3000)
    assert "heartbeat_ack" not in p.stdout, p.stdout
    wait_counter(pan, "unknown CURVE key", BURST + 1, before)
    # psn2's key, psn1's name: foreign, no answer.
    p = zraw(pan, "--heartbeat", "--count", str(BURST), "--expect-reply", key_of=psn2,
             sender="psn1", check=ZRAW_NO_REPLY, timeout_ms=3000)
    assert "heartbeat_ack" not in p.stdout, p.stdout
    wait_counter(pan, "sender is not the key's node", BURST + 1, before)
    # psn1's key, a version the PAN does not speak.
    zraw(pan, "--wrong-version", "--count", str(BURST), key_of=psn1, sender="psn1",
         check=ZRAW_OK)
    wait_counter(pan, "wrong version", BURST, before)
    foreign = mark.lines("dropped (sender is not the key's node)")
    assert foreign and "heartbeat for 'psn1' from the CURVE key of psn2" in foreign[0], foreign
    unknown = mark.lines("dropped (unknown CURVE key)")
    assert unknown and "heartbeat for 'psn1'" in unknown[0], unknown

    time.sleep(1.5)   # a tick of registry_tick() would show a change
    assert pan.node_state("psn1") == "registered"
    assert node_row(pan, "psn1") == row
    assert pan.node_state("psn2") == "connected"
    assert not any("psn1" in ln for ln in pan.alarms().splitlines()[1:])

    # The real key: acknowledged, and psn1 is connected.
    p = zraw(pan, "--expect-reply", key_of=psn1, sender="psn1", check=ZRAW_OK)
    assert re.search(r"^reply: heartbeat_ack from 'pan1'", p.stdout, re.M), p.stdout
    pan.wait_state("psn1", "connected", timeout=10)
    assert node_row(pan, "psn1") != row


def test_refused_joins_flood_is_rate_limited(lab):
    pan = lab.pan()
    mark = LogMark(pan)
    before = messaging_counters(pan)
    n = 200
    t0 = time.monotonic()
    zraw(pan, "--bad-join", "--count", str(n), "--expect-reply", "--probe", "join",
         check=ZRAW_OK)
    elapsed = time.monotonic() - t0
    wait_for(lambda: messaging_counters(pan)["refused"] - before["refused"] == n + 1,
             COUNT_TIMEOUT, "the refusals to be counted")
    assert_serves(pan)
    lines = mark.lines("refused")
    assert len(lines) <= 2 + 2 * int(elapsed / DROP_LOG_INTERVAL), \
        f"{len(lines)} log lines for {n + 2} refused joins in {elapsed:.1f}s"
