#!/usr/bin/env python3
"""Ask an HLR for authentication vectors the way a VLR/SGSN does (GSUP SendAuthInfo over IPA,
as osmo-hlr speaks it), so a test can see the HLR's own answer for an IMSI, with no mcim code
in between. Usage: gsup_sai.py ADDR IMSI. Prints "vectors N" or "error CAUSE" (the GSUP cause,
2 = IMSI unknown); exit 0 on either answer, 1 when the HLR does not answer within 5 s."""
import socket
import struct
import sys

PROTO_IPACCESS, PROTO_OSMO, EXT_GSUP = 0xFE, 0xEE, 0x05
PING, PONG, ID_GET, ID_RESP = 0x00, 0x01, 0x04, 0x05
SAI_REQ, SAI_ERR, SAI_RES = 0x08, 0x09, 0x0A
IMSI_IE, CAUSE_IE, TUPLE_IE = 0x01, 0x02, 0x03


def frame(proto, payload):
    return struct.pack(">HB", len(payload), proto) + payload


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def main():
    addr, imsi = sys.argv[1], sys.argv[2]
    digits = imsi + ("F" if len(imsi) % 2 else "")
    bcd = bytes(int(digits[i + 1], 16) << 4 | int(digits[i], 16) for i in range(0, len(digits), 2))
    sai = bytes([EXT_GSUP, SAI_REQ, IMSI_IE, len(bcd)]) + bcd
    s = socket.create_connection((addr, 4222), timeout=5)
    sent = False
    while True:
        length, proto = struct.unpack(">HB", recv_exact(s, 3))
        body = recv_exact(s, length)
        if proto == PROTO_IPACCESS and body[:1] == bytes([PING]):
            s.sendall(frame(PROTO_IPACCESS, bytes([PONG])))
        elif proto == PROTO_IPACCESS and body[:1] == bytes([ID_GET]) and not sent:
            resp = bytes([ID_RESP])
            for i in range(1, len(body) - 1, 2):
                value = b"mcim-test-probe\0" if body[i + 1] in (0x00, 0x01) else b"\0"
                resp += struct.pack(">HB", len(value) + 1, body[i + 1]) + value
            s.sendall(frame(PROTO_IPACCESS, resp) + frame(PROTO_OSMO, sai))
            sent = True
        elif proto == PROTO_OSMO and sent and body[:1] == bytes([EXT_GSUP]):
            kind, ies = body[1], body[2:]
            tlv, i = {}, 0
            while i + 2 <= len(ies):
                tag, ln = ies[i], ies[i + 1]
                tlv.setdefault(tag, []).append(ies[i + 2:i + 2 + ln])
                i += 2 + ln
            if kind == SAI_RES:
                print("vectors %d" % len(tlv.get(TUPLE_IE, [])))
            elif kind == SAI_ERR:
                print("error %d" % tlv.get(CAUSE_IE, [b"\0"])[0][0])
            else:
                print("unexpected GSUP message 0x%02x" % kind)
            return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, EOFError) as e:
        print("no answer: %s" % e)
        sys.exit(1)
