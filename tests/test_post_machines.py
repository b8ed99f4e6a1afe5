"""Post-processor machines without sockets: protocol answers built from the specifications
(AMQP 0-9-1, MQTT 3.1.1, RFC 3412/3414 SNMPv3, RFC 1157 SNMPv1, RESP, memcached's protocol
text), then every truncation and random bytes: a machine never raises, never keeps more than
its bound, and learns nothing from a broken answer. Also the flag and the trigger rules."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servprobe import post
from servprobe.post import amqp, git, http, kerberos, ldap, memcached, mqtt, redis, smb, snmp, xmpp
from servprobe.post.base import MAX_BUFFER, apply
from servprobe.result import ServiceResult


def _result(service: str | None, port: int = 9999, proto: str = "tcp", **kw: object) -> ServiceResult:
    return ServiceResult("127.0.0.1", port, proto, service=service, **kw)  # type: ignore[arg-type]


def _run(machine_cls: type, data: bytes, result: ServiceResult | None = None, eof: bool = False):
    m = machine_cls(result or _result(None))
    m.start(0.0)
    m.feed(data, 0.0)
    if eof and not m.done:
        m.eof(0.0)
    return m, m.finish()


# ------------------------------------------------------------------ AMQP 0-9-1 (spec §4.2, §4.2.5)


def _shortstr(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def _longstr(s: bytes) -> bytes:
    return struct.pack(">I", len(s)) + s


def _table(items: list[tuple[bytes, bytes]]) -> bytes:
    return _longstr(b"".join(_shortstr(k) + v for k, v in items))


def connection_start(product: bytes = b"RabbitMQ", version: bytes = b"3.10.8") -> bytes:
    caps = _table([(b"publisher_confirms", b"t\x01"), (b"basic.nack", b"t\x00")])
    props = _table([(b"capabilities", b"F" + caps), (b"product", b"S" + _longstr(product)),
                    (b"version", b"S" + _longstr(version)), (b"platform", b"S" + _longstr(b"Erlang/OTP 25")),
                    (b"count", b"I" + struct.pack(">i", -5)), (b"list", b"A" + _longstr(b"S" + _longstr(b"x")))])
    payload = struct.pack(">HHBB", 10, 10, 0, 9) + props + _longstr(b"PLAIN AMQPLAIN") + _longstr(b"en_US")
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def test_amqp_connection_start() -> None:
    m, f = _run(amqp.AmqpMachine, connection_start(), _result("amqp"))
    assert m.done and f is not None
    assert f.fields == {"extrainfo": "0-9", "product": "RabbitMQ", "version": "3.10.8"}
    el = f.script.elements
    assert el["capabilities"] == {"publisher_confirms": "YES", "basic.nack": "NO"}
    assert el["count"] == "-5" and el["list"] == ["x"]
    assert el["mechanisms"] == "PLAIN AMQPLAIN" and el["locales"] == "en_US"
    assert f.script.output.startswith("\n  capabilities: \n    publisher_confirms: YES\n")


def test_amqp_other_protocol_header_is_reported_not_refined() -> None:
    # an AMQP 1.0-only broker answers with its own header: protocol id 0, version 1.0.0
    _, f = _run(amqp.AmqpMachine, b"AMQP\x00\x01\x00\x00")
    assert f is not None and not f.fields and f.script.elements == {"offered": "1-0-0"}


def test_amqp_every_truncation_learns_nothing() -> None:
    frame = connection_start()
    for cut in range(len(frame)):
        _, f = _run(amqp.AmqpMachine, frame[:cut], eof=True)
        assert f is None, cut


def test_amqp_escapes_service_bytes() -> None:
    _, f = _run(amqp.AmqpMachine, connection_start(product=b"Evil\x1b[2J\x00"))
    assert f.fields["product"] == "Evil\\x1b[2J\\x00"


# ------------------------------------------------------------------ MQTT 3.1.1 (§3.2, §3.3, §3.9)


def _publish(topic: bytes, payload: bytes, flags: int = 0) -> bytes:
    body = struct.pack(">H", len(topic)) + topic + (b"\x00\x07" if flags & 0x06 else b"") + payload
    return mqtt._packet(0x30 | flags, body)


def test_mqtt_exchange_in_steps() -> None:
    m = mqtt.MqttMachine(_result("mqtt"))
    assert m.start(0.0) == [mqtt.CONNECT]
    assert mqtt.CONNECT[0] == 0x10 and b"\x00\x04MQTT\x04" in mqtt.CONNECT
    assert m.feed(b"\x20\x02\x00\x00", 0.0) == [mqtt.SUBSCRIBE]
    assert m.feed(b"\x90\x03\x00\x01\x00", 0.0) == [] and not m.done
    packet = _publish(b"$SYS/broker/version", b"mosquitto version 2.0.11", flags=0x03)
    m.feed(packet[:5], 0.0)
    m.feed(packet[5:], 0.0)
    assert m.done
    f = m.finish()
    assert f.fields == {"product": "Mosquitto", "version": "2.0.11"}
    assert f.script.elements == {mqtt.HEADING: {"$SYS/broker/version": "mosquitto version 2.0.11"}}


def test_mqtt_refused_and_garbage() -> None:
    m = mqtt.MqttMachine(_result("mqtt"))
    m.start(0.0)
    m.feed(b"\x20\x02\x00\x05", 0.0)
    assert m.done and m.finish().script.output == "Connection refused: not authorized"
    _, f = _run(mqtt.MqttMachine, b"\x20\xff\xff\xff\xff\xff")  # remaining length > 4 bytes
    assert f is None


# ------------------------------------------------------------------ SNMP


def test_snmp_v3_discovery_request_is_rfc3412() -> None:
    (tag, msg), = snmp.decode(snmp.V3_DISCOVERY)
    assert tag == 0x30 and msg[0] == (0x02, b"\x03")
    assert msg[1][1][2] == (0x04, b"\x04")  # msgFlags: reportable, no auth, no priv
    assert msg[1][1][3] == (0x02, b"\x03")  # USM
    assert msg[3][1][2][0] == 0xA0  # GetRequest PDU


def _report(engine_id: bytes, boots: int, etime: int) -> bytes:
    usm = snmp.seq(snmp.tlv(0x04, engine_id), snmp.ber_int(boots), snmp.ber_int(etime),
                   snmp.tlv(0x04, b""), snmp.tlv(0x04, b""), snmp.tlv(0x04, b""))
    return snmp.seq(snmp.ber_int(3), snmp.seq(snmp.ber_int(1), snmp.ber_int(65507), snmp.tlv(0x04, b"\x00"), snmp.ber_int(3)),
                    snmp.tlv(0x04, usm), snmp.seq(snmp.tlv(0x04, engine_id), snmp.tlv(0x04, b""), snmp.seq(tag=0xA8)))


def test_snmp_v3_report() -> None:
    engine = bytes.fromhex("80001f8880") + bytes.fromhex("ac0ac00c1524106b00000000")
    res = _result("snmp", proto="udp", product="SNMPv1 server")
    _, f = _run(snmp.SnmpV3Machine, _report(engine, 3, 3723), res)
    assert f.script.elements == {"enterprise": "net-snmp", "engineIDFormat": "unknown",
                                 "engineIDData": "ac0ac00c1524106b00000000",
                                 "snmpEngineBoots": "3", "snmpEngineTime": "1h02m03s"}
    assert f.fields == {"product": "SNMPv1 server; net-snmp SNMPv3 server"}
    ipv4 = bytes.fromhex("8000000901") + bytes([10, 0, 0, 1])
    _, f = _run(snmp.SnmpV3Machine, _report(ipv4, 0, 90061))
    assert f.script.elements["enterprise"] == "Cisco"
    assert f.script.elements["engineIDData"] == "10.0.0.1"
    assert f.script.elements["snmpEngineTime"] == "1d01h01m01s"


def test_snmp_sysdescr_v1_response() -> None:
    binds = snmp.seq(snmp.seq(snmp.ber_oid(snmp.SYSDESCR), snmp.tlv(0x04, b"Linux box 6.1")),
                     snmp.seq(snmp.ber_oid(snmp.SYSUPTIME), snmp.tlv(0x43, (4519).to_bytes(2, "big"))))
    pdu = snmp.seq(snmp.ber_int(snmp.REQUEST_ID), snmp.ber_int(0), snmp.ber_int(0), binds, tag=0xA2)
    _, f = _run(snmp.SysDescrMachine, snmp.seq(snmp.ber_int(0), snmp.tlv(0x04, b"public"), pdu))
    assert f.script.output == "Linux box 6.1\n  System uptime: 45.19s (4519 timeticks)"
    # an error status (noSuchName) is no description
    bad = snmp.seq(snmp.ber_int(snmp.REQUEST_ID), snmp.ber_int(2), snmp.ber_int(1), binds, tag=0xA2)
    _, f = _run(snmp.SysDescrMachine, snmp.seq(snmp.ber_int(0), snmp.tlv(0x04, b"public"), bad))
    assert f is None


def test_ber_oid_roundtrip() -> None:
    assert snmp.ber_oid("1.3.6.1.2.1.1.1.0") == bytes.fromhex("06082b06010201010100")
    assert snmp._oid_text(snmp.ber_oid("1.3.6.1.4.1.8072.3.2.10")[2:]) == "1.3.6.1.4.1.8072.3.2.10"


# ------------------------------------------------------------------ LDAP (RFC 4511 §4.5.2, RFC 4512 §5.1)


def _entry(attrs: dict[bytes, list[bytes]]) -> bytes:
    from servprobe.post.ber import ber_int, seq, tlv

    pl = b"".join(seq(tlv(0x04, k), seq(*(tlv(0x04, v) for v in vs), tag=0x31)) for k, vs in attrs.items())
    entry = seq(ber_int(1), seq(tlv(0x04, b""), seq(pl), tag=0x64))
    done = seq(ber_int(1), seq(ber_int(0, 0x0A), tlv(0x04, b""), tlv(0x04, b""), tag=0x65))
    return entry + done


def test_ldap_request_is_a_base_search_of_the_root() -> None:
    from servprobe.post.ber import decode

    (_, msg), = decode(ldap.SEARCH_ROOT_DSE)
    assert msg[0] == (0x02, b"\x01") and msg[1][0] == 0x63
    req = msg[1][1]
    assert req[0] == (0x04, b"") and req[1] == (0x0A, b"\x00") and req[6] == (0x87, b"objectClass")


def test_ldap_vendor_openldap_and_ad() -> None:
    data = _entry({b"vendorName": [b"389 Project"], b"vendorVersion": [b"389-Directory/2.3.1"],
                   b"namingContexts": [b"dc=a", b"dc=b"]})
    m, f = _run(ldap.LdapMachine, data, _result("ldap"))
    assert m.done and f.fields == {"product": "389 Project", "version": "389-Directory/2.3.1"}
    assert f.script.elements["namingContexts"] == ["dc=a", "dc=b"]
    _, f = _run(ldap.LdapMachine, _entry({b"objectClass": [b"top", b"OpenLDAProotDSE"]}),
                _result("ldap", product="OpenLDAP", version="2.2.X - 2.3.X"))
    r = _result("ldap", product="OpenLDAP", version="2.2.X - 2.3.X")
    apply(r, f)
    assert (r.product, r.version) == ("OpenLDAP", None)
    _, f = _run(ldap.LdapMachine, _entry({b"domainFunctionality": [b"7"], b"dnsHostName": [b"dc1.corp.example"],
                                          b"defaultNamingContext": [b"DC=corp,DC=example"]}))
    assert f.fields["hostname"] == "dc1.corp.example" and f.fields["extrainfo"] == "Domain: DC=corp,DC=example"
    whole_answer = _entry({b"vendorName": [b"x"]})
    for cut in range(len(whole_answer) - 20):
        _run(ldap.LdapMachine, whole_answer[:cut], eof=True)  # never raises


# ------------------------------------------------------------------ git (gitprotocol-pack, gitprotocol-v2)


def test_git_v0_v2_and_err() -> None:
    v0 = git.pkt_line(b"95dcfa3633004da0049d3d0fa03f80589cbcaf31 HEAD\x00multi_ack side-band-64k agent=git/2.30.2\n")
    m, f = _run(git.GitMachine, v0 + git.pkt_line(b"95dc refs/heads/main\n") + b"0000")
    assert m.done and f.fields == {"product": "git daemon", "version": "2.30.2"}
    assert f.script.elements["protocol"] == "0" and "side-band-64k" in f.script.elements["capabilities"]
    v2 = b"".join(git.pkt_line(x) for x in (b"version 2\n", b"agent=JGit/6.1\n", b"ls-refs\n")) + b"0000"
    _, f = _run(git.GitMachine, v2)
    assert f.script.elements["agent"] == "JGit/6.1" and f.fields == {}  # not git's own daemon
    _, f = _run(git.GitMachine, git.pkt_line(b"ERR access denied or repository not exported: /"))
    assert f.script.output == "error: access denied or repository not exported: /"
    assert git.request("h").startswith(b"0028git-upload-pack /\x00host=h\x00\x00version=2\x00")
    for cut in range(len(v0)):
        _run(git.GitMachine, v0[:cut], eof=True)


# ------------------------------------------------------------------ SMB2 (MS-SMB2 2.2.3/2.2.4) + NTLMSSP (MS-NLMP 2.2.1.2)


def _smb2(command: int, body: bytes, status: int = 0) -> bytes:
    head = b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ", 64, 0, status, command, 1, 1, 0, 0, 0, 0, 0) + b"\x00" * 16
    return struct.pack(">I", 64 + len(body)) + head + body


def _challenge() -> bytes:
    def av(i: int, v: str) -> bytes:
        raw = v.encode("utf-16-le")
        return struct.pack("<HH", i, len(raw)) + raw

    info = av(2, "CORP") + av(1, "FS01") + av(4, "corp.example") + av(3, "fs01.corp.example") + struct.pack("<HH", 0, 0)
    target = "CORP".encode("utf-16-le")
    head = (smb.NTLMSSP + struct.pack("<I", 2) + struct.pack("<HHI", len(target), len(target), 56)
            + struct.pack("<I", 0x02800000 | 0x1) + b"\x11" * 8 + b"\x00" * 8
            + struct.pack("<HHI", len(info), len(info), 56 + len(target)) + bytes([10, 0]) + struct.pack("<H", 20348) + b"\x00\x00\x00\x0f")
    return head + target + info


def test_smb2_negotiate_and_challenge() -> None:
    m = smb.SmbMachine(_result("microsoft-ds", product="Samba smbd", version="4.6.2"))
    (req,) = m.start(0.0)
    assert req[4:8] == b"\xfeSMB" and struct.unpack(">I", req[:4])[0] == len(req) - 4
    ft = (1_700_000_000 + smb.FILETIME_EPOCH) * 10_000_000
    neg = struct.pack("<HHHH", 65, 3, 0x0302, 0) + b"g" * 16 + struct.pack("<IIIIQQHHI", 0, 0, 0, 0, ft, 0, 128, 0, 0)
    (setup,) = m.feed(_smb2(0, neg), 0.0)
    assert b"NTLMSSP\x00\x01\x00\x00\x00" in setup
    m.feed(_smb2(1, struct.pack("<HHHH", 9, 0, 72, 0) + _challenge(), status=0xC0000016), 0.0)
    assert m.done
    f = m.finish()
    assert f.script.elements == {"302": ["Message signing enabled and required"]}
    scripts = {s.id: s.elements for s in f.more}
    assert scripts["smb2-time"] == {"date": "2023-11-14T22:13:20", "start_date": "N/A"}
    assert scripts["smb-ntlm-info"] == {"Target_Name": "CORP", "NetBIOS_Domain_Name": "CORP", "NetBIOS_Computer_Name": "FS01",
                                        "DNS_Domain_Name": "corp.example", "DNS_Computer_Name": "fs01.corp.example",
                                        "Product_Version": "10.0.20348"}
    assert f.fields == {"hostname": "FS01", "version": ""}
    for cut in range(0, len(neg) + 68, 7):
        _run(smb.SmbMachine, _smb2(0, neg)[:cut], eof=True)
    _, f = _run(smb.SmbMachine, b"\x85\x00\x00\x00")  # NetBIOS keep-alive-ish junk
    assert f is None


def _smb1_answer(command: int, words: bytes, data: bytes, status: int = 0) -> bytes:
    head = b"\xffSMB" + struct.pack("<BIBHH8sHHHHH", command, status, 0x88, 0x4001, 0, b"", 0, 0, 0, 0, 1)
    smb1 = head + bytes([len(words) // 2]) + words + struct.pack("<H", len(data)) + data
    return struct.pack(">I", len(smb1)) + smb1


def test_smb1_native_lanman() -> None:
    """MS-CIFS 2.2.4.52.2 / 2.2.4.53.2: NEGOTIATE (17 words), SESSION_SETUP_ANDX (3 words)."""
    m = smb.Smb1Machine(_result("netbios-ssn", product="Samba smbd", version="3.X - 4.X"))
    (req,) = m.start(0.0)
    assert req[4:9] == b"\xffSMBr" and req.endswith(b"\x02NT LM 0.12\x00")
    (setup,) = m.feed(_smb1_answer(0x72, b"\x00" * 34, b""), 0.0)
    assert setup[4:9] == b"\xffSMBs"
    m.feed(_smb1_answer(0x73, b"\xff\x00\x00\x00\x00\x00", b"Windows 6.1\x00Samba 4.17.12-Debian\x00WG\x00"), 0.0)
    f = m.finish()
    assert f.fields == {"product": "Samba smbd", "version": "4.17.12-Debian"}
    assert f.script.elements["OS"] == "Windows 6.1 (Samba 4.17.12-Debian)"
    # SMB1 disabled: the server answers in SMB2, or with an error status
    _, f = _run(smb.Smb1Machine, b"\x00\x00\x00\x44\xfeSMB" + b"\x00" * 64)
    assert f is None
    _, f = _run(smb.Smb1Machine, _smb1_answer(0x72, b"", b"", status=0xC0000002))
    assert f is None


# ------------------------------------------------------------------ XMPP (RFC 6120 §4.3, §6.4.1; XEP-0115)

STREAM = (b"<?xml version='1.0'?><stream:stream from='example.org' id='abc' version='1.0' xml:lang='en' "
          b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


def test_xmpp_features_and_caps() -> None:
    feats = (b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
             b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism>"
             b"<mechanism>PLAIN</mechanism></mechanisms><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
             b"node='http://www.process-one.net/en/ejabberd/' ver='x'/></stream:features>")
    m = xmpp.XmppMachine(_result(None))
    m.start(0.0)
    m.feed(STREAM, 0.0)
    assert not m.done
    m.feed(feats, 0.0)
    f = m.finish()
    assert m.done and f.fields == {"product": "ejabberd"} and f.service == "xmpp"
    assert f.script.elements["features"] == ["starttls (required)"]
    assert f.script.elements["auth_mechanisms"] == ["SCRAM-SHA-1", "PLAIN"]
    assert f.script.elements["from"] == "example.org" and f.script.elements["stream_id"] == "abc"


def test_xmpp_error_text_names_prosody_only_without_to() -> None:
    err = (b"<stream:error><improper-addressing xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
           b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>A &apos;to&apos; attribute is required on "
           b"stream headers</text></stream:error></stream:stream>")
    m, f = _run(xmpp.XmppNoTo, STREAM + err)
    assert b" to=" not in m.start(0.0)[0] and f.fields == {"product": "Prosody XMPP server"}
    _, f = _run(xmpp.XmppNoTo, STREAM + err.replace(b"A &apos;to", b"Some other"))
    assert f is None
    bomb = b"<!DOCTYPE x [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]>" + STREAM + b"&b;" * 1000
    m, f = _run(xmpp.XmppMachine, bomb, eof=True)
    assert f.script.elements["version"] == "1.0"  # read as text, nothing expanded


# ------------------------------------------------------------------ Kerberos (RFC 4120 §5.4.1, §5.9.1)


def test_kerberos_as_req_and_krb_error() -> None:
    from servprobe.post.ber import decode, seq, tlv

    (tag, body), = decode(kerberos.as_req("EXAMPLE.ORG"))
    assert tag == 0x6A  # [APPLICATION 10] AS-REQ
    parts = {t: v for t, v in body[0][1]}
    assert parts[0xA1] == [(0x02, b"\x05")] and parts[0xA2] == [(0x02, b"\x0a")]
    err = tlv(0x7E, seq(*(tlv(0xA0 + n, v) for n, v in [
        (0, tlv(0x02, b"\x05")), (1, tlv(0x02, b"\x1e")), (4, tlv(0x18, b"20261202101112Z")),
        (5, tlv(0x02, b"\x01")), (6, tlv(0x02, b"\x06")), (9, tlv(0x1B, b"EXAMPLE.ORG")),
        (10, seq(tlv(0xA0, tlv(0x02, b"\x02")), tlv(0xA1, seq(tlv(0x1B, b"krbtgt")))))])))
    m = kerberos.KrbUdp(_result("kerberos-sec", proto="udp", hostname="EXAMPLE.ORG"))
    assert b"EXAMPLE.ORG" in m.start(0.0)[0]
    m.feed(err, 1_796_206_200.0)
    f = m.finish()
    assert f.script.elements["realm"] == "EXAMPLE.ORG" and f.script.elements["error"] == "KDC_ERR_C_PRINCIPAL_UNKNOWN"
    assert f.script.elements["server time"] == "2026-12-02 10:11:12Z"
    assert f.script.elements["clock skew"] == "+72s"
    tcp = kerberos.KrbTcp(_result("kerberos-sec"))
    assert kerberos.PLACEHOLDER_REALM.encode() in tcp.start(0.0)[0]
    tcp.feed(struct.pack(">I", len(err)) + err[:10], 0.0)
    assert not tcp.done
    for cut in range(len(err)):
        _run(kerberos.KrbUdp, err[:cut])


# ------------------------------------------------------------------ STUN (RFC 8489 §5, §14.2, §14.14)


def test_stun_binding_response() -> None:
    from servprobe.post import stun

    assert stun.BINDING[:8] == bytes.fromhex("000100002112a442") and len(stun.BINDING) == 20
    soft = b"Coturn-4.6.1 'Gorst'"
    xport = 40000 ^ 0x2112
    xaddr = bytes(a ^ b for a, b in zip(bytes([127, 0, 0, 1]), bytes.fromhex("2112a442"), strict=True))
    attrs = (struct.pack(">HH", 0x0020, 8) + b"\x00\x01" + struct.pack(">H", xport) + xaddr
             + struct.pack(">HH", 0x8022, len(soft)) + soft + b"\x00" * (-len(soft) % 4))
    msg = struct.pack(">HHI", 0x0101, len(attrs), 0x2112A442) + stun.TXID + attrs
    _, f = _run(stun.StunUdp, msg)
    assert f.script.elements == {"software": "Coturn-4.6.1 'Gorst'", "mapped": "127.0.0.1:40000"}
    assert f.fields == {"product": "Coturn", "version": "4.6.1"}
    _, f = _run(stun.StunUdp, msg[:8] + b"x" * 12 + msg[20:])  # someone else's transaction
    assert f is None
    m, f = _run(stun.StunTcp, msg[:30])
    assert not m.done and f is None


# ------------------------------------------------------------------ RFC 868


def test_rfc868() -> None:
    from servprobe.post import rfc868

    stamp = (1_796_206_272 + rfc868.EPOCH_1900).to_bytes(4, "big")  # 2026-12-02T10:11:12Z
    m = rfc868.TimeMachine(_result("time"))
    assert m.start(0.0) == []
    m.feed(stamp, 1_796_206_270.0)
    m.eof(0.0)
    f = m.finish()
    assert f.script.output == "2026-12-02T10:11:12" and f.fields == {"extrainfo": "32 bits"}
    assert f.script.elements["clock skew"] == "+2s"
    for bad in (b"", b"abc", b"abcde"):
        _, f = _run(rfc868.TimeMachine, bad, eof=True)
        assert f is None
    assert rfc868.TimeUdp(_result("time", proto="udp")).start(0.0) == [b"\n"]


# ------------------------------------------------------------------ HTTP, Redis, memcached


def test_http_server_header_fills_product_only_when_missing() -> None:
    answer = b"HTTP/1.1 200 OK\r\nServer: Foo/1.2 (Unix)\r\nX: y\r\n\r\nbody"
    _, f = _run(http.HttpMachine, answer, _result("http"))
    assert f.script.output == "Foo/1.2 (Unix)" and f.fields == {"product": "Foo", "version": "1.2"}
    _, f = _run(http.HttpMachine, answer, _result("http", product="nginx"))
    assert f.fields == {}
    assert http.split_server("Apache Tomcat/9.0 (x)") == ("Apache Tomcat", "9.0")


def test_http_proxies_named_by_what_they_send() -> None:
    varnish = b"HTTP/1.1 503 Backend fetch failed\r\nServer: Varnish\r\nX-Varnish: 3\r\nVia: 1.1 varnish (Varnish/7.1)\r\n\r\n"
    _, f = _run(http.HttpMachine, varnish, _result("http-proxy", product="Varnish http accelerator"))
    assert f.fields == {"product": "Varnish http accelerator", "version": "7.1"}
    _, f = _run(http.HttpMachine, varnish, _result("http", product="nginx"))
    assert "product" not in f.fields  # the walk named another product: kept
    page = b"<html><body><h1>503 Service Unavailable</h1>\n" + http.HAPROXY_503 + b"\n</body></html>\n"
    answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n" % len(page)
    m = http.HttpMachine(_result(None))
    m.start(0.0)
    m.feed(answer + page[:20], 0.0)
    assert not m.done  # waits for the announced body
    m.feed(page[20:], 0.0)
    assert m.done and m.finish().fields == {"product": "HAProxy http proxy"}
    huge = b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n"
    m, _ = _run(http.HttpMachine, huge)
    assert m.done  # too long a body is not waited for


def test_https_redirect_same_port_only() -> None:
    answer = b"HTTP/1.1 301 Moved\r\nLocation: https://127.0.0.1:9999/\r\n\r\n"
    _, f = _run(http.HttpMachine, answer, _result("http"))
    assert f.tunnel == "ssl" and f.more[0].id == "https-redirect"
    for other in (answer.replace(b"9999", b"8443"), answer.replace(b"127.0.0.1", b"elsewhere.example")):
        _, f = _run(http.HttpMachine, other, _result("http"))
        assert f is None or f.tunnel is None


def test_redis_info_and_noauth() -> None:
    body = b"# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nos:Linux\r\nexecutable:/x\r\n"
    _, f = _run(redis.RedisMachine, b"$%d\r\n" % len(body) + body)
    assert f.fields == {"product": "Redis key-value store", "version": "7.0.15"}
    assert f.script.elements == {"Version": "7.0.15", "Mode": "standalone", "Operating System": "Linux"}
    _, f = _run(redis.RedisMachine, b"-NOAUTH Authentication required.\r\n")
    assert f.script.output == "authentication required" and not f.fields


def test_memcached_udp_frame() -> None:
    m = memcached.MemcachedUdp(_result(None, proto="udp"))
    (req,) = m.start(0.0)
    assert req[:8] == struct.pack(">HHHH", memcached.REQUEST_ID, 0, 1, 0) and req[8:] == b"version\r\n"
    m.feed(struct.pack(">HHHH", 1, 0, 1, 0) + b"VERSION 9\r\n", 0.0)  # someone else's request id
    assert not m.done
    m.feed(req[:2] + b"\x00\x00\x00\x01\x00\x00VERSION 1.6.18\r\n", 0.0)
    assert m.finish().fields == {"product": "Memcached", "version": "1.6.18"}


def test_udp_answer_makes_the_port_open() -> None:
    r = _result(None, proto="udp", state="open|filtered")
    apply(r, memcached._finding("1.6.18", "udp"))
    assert (r.state, r.service, r.method, r.conf) == ("open", "memcached", "probed", 10)


# ------------------------------------------------------------------ hostile input, every machine

MACHINES = [p.machine for p in post.REGISTRY if not p.offline]


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=6), eof=st.booleans())
def test_random_bytes_never_raise(chunks: list[bytes], eof: bool) -> None:
    for cls in MACHINES:
        m = cls(_result("x"))
        m.start(0.0)
        for c in chunks:
            if m.done:
                break
            m.feed(c, 0.0)
        if eof and not m.done:
            m.eof(0.0)
        m.finish()


@pytest.mark.parametrize("cls", [amqp.AmqpMachine, http.HttpMachine, redis.RedisMachine, mqtt.MqttMachine])
def test_endless_stream_is_bounded(cls: type) -> None:
    m = cls(_result("x"))
    m.start(0.0)
    chunk = b"$" + b"9" * 9 if cls is redis.RedisMachine else b"\x01\x00\x00\x7f\xff\xff\xff"
    m.feed(chunk, 0.0)
    for _ in range(200):
        if m.done:
            break
        m.feed(b"A" * 4096, 0.0)
    assert m.done or len(getattr(m, "buf", b"")) <= MAX_BUFFER


# ------------------------------------------------------------------ selection and triggers


def test_select() -> None:
    assert post.select("all") == post.IDS and post.select("none") == ()
    assert post.select("amqp-info, redis-info") == ("amqp-info", "redis-info")
    with pytest.raises(post.SelectionError, match="'nope'"):
        post.select("amqp-info,nope")


def test_triggers() -> None:
    ids = lambda r: [p.id for p in post.applicable(r)]  # noqa: E731
    assert ids(_result("amqp")) == ["amqp-info"]
    assert ids(_result(None, port=5672)) == ["amqp-info"]
    assert ids(_result("snmp", proto="udp")) == ["snmp-info", "snmp-sysdescr"]
    assert "memcached-info" in ids(_result(None, proto="udp"))
    assert ids(_result("ssh")) == []
    assert ids(_result("redis", state="closed")) == []
    assert ids(_result("memcached", tunnel="ssl")) == []
