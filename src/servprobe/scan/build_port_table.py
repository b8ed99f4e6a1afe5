"""Builds src/servprobe/data/servprobe-services, the bundled port table (run by hand).

    python -m servprobe.scan.build_port_table [/etc/services] > src/servprobe/data/servprobe-services

Two sources, both public and neither of them nmap's:
1. Names: Debian's /etc/services (package netbase), which is derived from the IANA "Service
   Name and Transport Protocol Port Number Registry". Every name/port/proto row is kept.
2. Ranking: COMMON_TCP / COMMON_UDP below, servprobe's own list of the ports most often
   found open on servers and networks, written from operational experience (default ports of
   widespread daemons, appliances and databases), most common first. Where netbase has no
   name for a ranked port, the name given here is the IANA-registered one (or, for
   unregistered de-facto ports, the daemon's common name).
Ports netbase registers but the list does not rank follow the ranked ones, by port number.
`--top-ports N` past the ranked rows continues with unranked ports in ascending order (see
servprobe.scan.services.top_ports).
"""

from __future__ import annotations

import sys
from datetime import date

# port[:name] — name only where netbase has none for that port/proto
COMMON_TCP = """
80 443 22 21 25 23 3389 110 445 139 143 53 135 3306 8080 1723 111 995 993 5900:vnc
1025:blackjack 587 8888:ddi-tcp-1 199:smux 1720:h323q931 465 548:afpovertcp 113 81:hosts2-ns
6001:x11-1 10000 514 5060 179 1026:cap 2000:cisco-sccp 8443:pcsync-https 8000:irdmi
32768:filenet-tms 554 26:rsftp 1433 49152 2001:dc 515 8008:http-alt2
49154 1027:exosee 5666:nrpe 646:ldp 5000:upnp 5631:pcanywheredata
631 49153 8081 2049 88 79 5800:vnc-http 106:pop3pw 2121:scientia-ssdb
1110:nfsd-status 49155 6000 513 990 5357:wsdapi 427:svrloc
49156 543 544 5101:talarian-tcp 144:news 7 389 8009:ajp13 3128:squid-http
444:snpp 9999:distinct 5009:airport-admin 7070:realserver 5190:aol 3000:hbci 5432
1900:upnp-ssdp 3986:mapper-ws-ethd 13 1029:solid-mux 9 5051:ita-agent 6646:mcafee-ws
49157 1028 873 1755:wms 2717:pn-requester 4899:radmin
9100:jetdirect 119 37 6379 11211:memcache 27017:mongod 9200:wap-wsp 5672 1521:oracle
5984:couchdb 9090:websm 2222:ethernetip-1 8089 9000:cslistener
5601:esmagent 8086:d-s-n 9092:xmltec-xmlmail 2181:eforward 5044:lxi-evntsvc
6443:sun-sr-https 2375:docker 2376:docker-s 10250 8500:fmtp 4369:epmd
15672 1883:mqtt 8883:secure-mqtt 5222:xmpp-client 5269:xmpp-server
6667:ircu 6697:ircs-u 119 563:nntps 636:ldaps 3268:msft-gc 3269:msft-gc-ssl 5985:wsman
5986:wsmans 47001:winrm 1434:ms-sql-m 3050:gds-db 50000:ibm-db2 8020:intu-ec-fmsrv
8983 7001:afs3-callback 7002:afs3-prserver 4443:pharos 8180
8001:vcom-tunnel 8002:teradataordbms 8010 8082:us-cli 8083:us-srv
8084:websnp 8085 8088:radan-http 8090:opsmessaging 8091:jamlink
8181:intermapper 8280:synapse-nhttp 8444:pcsync-http 8800:sunwebadmin 8880:cddbp-alt
9443:tungsten-https 9091:xmltec-xmlmail 9001:etlservicemgr 9002:dynamid 3001
4000:terabase 4001:newoak 4444:krb524 4848:appserv-http 5001:commplex-link
5002:rfe 5003:fmpro-internal 5004:avt-profile-1 5005:avt-profile-2 5050:mmcc 5080:onscreen
5555:personal-agent 5556:freeciv 6060:x11-60 6080:x11-80 6666:ircu-1 7000:afs3-fileserver
7443:oracleas-https 7777:cbt 8060 8069 8087:simplifymedia
8099 8100:xprint-server 8161:patrol-snmp 8333:bitcoin 8834:nessus-xmlrpc
9080:glrpc 9418 9600:micromuse-ncpw 10001:scp-config 10443
11443 12345:italk 20000:dnp 25565:minecraft 27018:mongod-shard
28017:mongod-web 32400:plex 49158 49159 1080 1194
1214:kazaa 1241:nessus 1311:rxmon 1352:lotusnote 1494:citrix-ica 1512:wins 1524:ingreslock
1701:l2f 1812:radius 1813:radius-acct 2000:cisco-sccp 2048:dls-monitor 2082:infowave
2083:radsec 2086:gnunet 2087:eli 2095:nbx-ser 2096:nbx-dir 2100:amiganetfs 2103:zephyr-clt
2105:eklogin 2107:msmq-mgmt 2401 2483:ttc 2484:ttc-ssl 2601 2602 2604 2605 3031:eppc
3260:iscsi-target 3283:netassistant 3299:pdrncs 3300:ceph 3333:dec-notes 3351:btrieve
3372:msdtc 3443:ov-nnm-www 3689:daap 3690 3703:adobeserver-3 4000:terabase 4040:yo-main
4045:npp 4125:opsview-envoy 4369:epmd 4567:tram 4662:edonkey 4786:smart-install
5061:sip-tls 5093:sentinel-lm 5120:barracuda-bbs 5222:xmpp-client 5280:xmpp-bosh
5353 5400:pcduo-old 5432 5498:hotline 5500:fcp-addr-srvr1 5510:secureidprop 5544
5550:cbus 5560:isqlplus 5631:pcanywheredata 5632:pcanywherestat 5633:beorl 5678:rrac
5679:dccm 5718:dpm 5850 5901:vnc-1 5902:vnc-2 5903:vnc-3 5910:cm
5938:teamviewer 5950 6002:x11-2 6003:x11-3 6004:x11-4 6005:x11-5
6006:x11-6 6007:x11-7 6009:x11-9 6100:synchronet-db 6112:dtspcd 6129:dameware
6346:gnutella 6347:gnutella2 6502:netop-rc 6543:mythtv 6544:mythtv 6565
6566:sane-port 6580:parsec-master 6588 6665:ircu 6668:ircu 6669:ircu
6689:tsa 6699:napster 6788:smc-http 6789:smc-https 6881:bittorrent-tracker 6901:jetstream
6969:acmsoda 7004:afs3-kaserver 7007:afs3-bos 7019:doceri-ctl 7025:vmsvc-2 7100:font-service
7200:fodms 7402:rtps-dd-mt 7435 7496 7512
7625 7627:soap-http 7676:imqbrokerd 7741:scriptview 7800:asr
7911 7920 7921 7937:nsrexecd 7938:lgtomapper
7999:irdmi2 8003:mcreport 8007:ajp12 8011 8021:ftp-proxy 8022:oa-system
8031 8042:fs-agent 8045 8093
8192:spytechphone 8193:sophos 8194:blp1 8200:trivnet1 8222 8254
8290 8291 8292:blp3 8300:tmi 8383:m2mservices 8400:cvd
8402:abarsd 8600:asterix 8649 8651 8652
8654 8701 8873:dxspider 8899:ospf-lite 9003
9009:pichat 9010:sdr 9011:d-star 9040:tor-trans 9050:tor-socks 9071
9101:jetdirect 9102:jetdirect 9103:jetdirect 9110 9111:DragonIDSConsole
9200:wap-wsp 9207:wap-vcal-s 9220 9290 9415
9485 9500:ismserver 9502 9503 9535:man
9575 9593:cba8 9594:msgsys 9595:pds 9618:condor 9666:zoomcp 9876:sd
9877:x510 9878:kca-service 9898:monkeycom 9900:iua 9917 9929:nping-echo
9943 9944 9968 9998:distinct32
10002:documentum 10003:documentum_s 10004:emcrmirccd 10009:swdtp-sv 10010:rxapi
10012 10024 10025 10082:amandaidx
10180 10215 10243 10566
10616 10617 10621 10626
10628 10629 10778 11110:sgi-soap
11111:vce 11967:sysinfo-sp 12000:cce4x 12174 12265
13456 13722:netbackup 13782:netbackup 13783:netbackup 14000:scotty-ft
14238 14441 14442 15000:hydap
15002:onep-tls 15003 15004 15660:bex-xr
15742 16000:fmsas 16001:fmsascon 16012
16016 16018 16080:osxwebadmin 16113
16992:amt-soap-http 16993:amt-soap-https 17877 17988
18040 18101 18988 19101
19283:keysrvr 19315:keyshadow 19350 19780
19801 19842 20005:openwebnet 20031
20221 20222:ipulse-ics 20828 21571
22939 23502 24444 24800
25734 25735 26214 27000:flexlm0
27352 27353 27355 27356
27715 28201 30000:ndmps 30718
30951 31038 31337:Elite 32769:filenet-rpc
32770:filenet-nch 32771:filenet-rmi 32772:filenet-pa 32773:filenet-cm 32774:filenet-re
32775:filenet-pch 32776:filenet-peior 32777:filenet-obrok 32778
32779 32780 32781 32782
32783 32784 33354 33899
34571 34572 34573 35500
38292:landesk-cba 40193 40911 41511
42510:caerpc 44176 44442:coldfusion-auth 44443:coldfusion-auth
44501 45100 48080 49160
49161 49163 49165 49167
49175 49176 49400:compaqdiag 49999
50001 50002:iiimsf 50003 50006
50300 50389 50500 50636
50800 51103 51493 52673
52822 52848 52869 54045
54328 55055 55056 55555
55600 56737 56738 57294
57797 58080 60020 60443
61532 61900 62078:iphone-sync 63331
64623 64680 65000 65129
65389
"""

COMMON_UDP = """
53 161 123 137 138 67 68 69 500 514 520 1900:ssdp 5353 111 4500 162 1434:ms-sql-m 5060
1812:radius 1813:radius-acct 445:microsoft-ds 135:epmap 139:netbios-ssn 631 2049 1194
51820:wireguard 3478:stun 5683:coap 11211:memcache 1701:l2tp 1645:radius-old
1646:radacct-old 177 7:echo 9:discard 13 17:qotd 19 37 49:tacacs 88 389:ldap 427:svrloc
443:quic 464 593:http-rpc-epmap 623:asf-rmcp 626:asia 996:vsinet 997:maitrd 998:puparp
999:applix 1022:exp2 1023 1025:blackjack 1026:win-rpc 1027
1028:ms-lsa 1029:solid-mux 1030:iad1 1719:h323gatestat 2000:cisco-sccp 2048:dls-monitor
2222:msantipiracy 3283:netassistant 3456:IISrpc-or-vat 4444:krb524 5000:upnp 5632:pcanywherestat
8888:ddi-udp-1 9200:wap-wsp 10000:ndmp 17185:wdbrpc 20031:bakbonenetvault 26000:quake
27015:halflife 27444:Trinoo_Bcast 31337:BackOrifice 32768:omad 32769:filenet-rpc
32770:filenet-nch 32771:sometimes-rpc6 32815 33281
49152 49153 49154 49156
49181 49182 49185 49186
49188 49190 49191 49192
49193 49194 49200 49201
"""


def parse_ranked(text: str) -> list[tuple[int, str | None]]:
    out: list[tuple[int, str | None]] = []
    seen: set[int] = set()
    for item in text.split():
        port_s, _, name = item.partition(":")
        port = int(port_s)
        if port in seen:  # the list is hand-written; the first position counts
            continue
        seen.add(port)
        out.append((port, name or None))
    return out


def read_etc_services(path: str) -> dict[tuple[str, int], str]:
    table: dict[tuple[str, int], str] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and "/" in fields[1]:
                port_s, _, proto = fields[1].partition("/")
                if port_s.isdigit() and proto in ("tcp", "udp"):
                    table.setdefault((proto, int(port_s)), fields[0])
    return table


def build(etc_services: str) -> str:
    names = read_etc_services(etc_services)
    lines = [
        "# servprobe-services: the port table bundled with servprobe.",
        f"# Generated {date.today().isoformat()} by `python -m servprobe.scan.build_port_table`.",
        "# Columns: service-name  port/proto  rank",
        "# Names: Debian netbase /etc/services (derived from the IANA Service Name and Transport",
        "#   Protocol Port Number Registry), and for ranked ports netbase does not list, the IANA",
        "#   name or the daemon's de-facto name as written in build_port_table.py.",
        "# Rank: servprobe's own ordering of commonly open ports (1 = most common; COMMON_TCP /",
        "#   COMMON_UDP in build_port_table.py), then the remaining netbase ports by number.",
        "#   Not derived from nmap-services. `--top-ports N` takes the N lowest ranks.",
    ]
    for proto, text in (("tcp", COMMON_TCP), ("udp", COMMON_UDP)):
        rank = 0
        done: set[int] = set()
        for port, name in parse_ranked(text):
            rank += 1
            done.add(port)
            lines.append(f"{names.get((proto, port)) or name or 'unknown'}\t{port}/{proto}\t{rank}")
        for (pr, port), name in sorted(names.items(), key=lambda kv: kv[0][1]):
            if pr == proto and port not in done:
                rank += 1
                lines.append(f"{name}\t{port}/{proto}\t{rank}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(build(sys.argv[1] if len(sys.argv) > 1 else "/etc/services"))
