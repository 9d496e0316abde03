"""WeCom's callback encryption (WXBizMsgCrypt), spoken exactly as WeCom's sample implementation does.

* signature: SHA1 over the lexically sorted token, timestamp, nonce and ciphertext, concatenated, as hex;
* key: base64-decode(EncodingAESKey + "=") → 32 bytes; AES-256-CBC with the key's first 16 bytes as IV;
* plaintext: 16 random bytes, the message length (4 bytes, network order), the message, the receive id
  (the corp id), PKCS#7-padded to a multiple of 32 bytes (not AES's 16: WeCom's block size);
* envelope: `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`.

Everything that can be wrong with a callback raises `CallbackRejected` with a reason for the log; the
caller answers WeCom and applies nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import time
from xml.etree.ElementTree import Element

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import ElementTree as SafeET

BLOCK = 32  # WeCom pads to 32 bytes
MAX_BODY = 64 * 1024  # a callback is a few hundred bytes; anything near this is not from WeCom
MAX_SKEW = 300  # seconds a callback's timestamp may differ from our clock (replays are refused)


class CallbackRejected(Exception):
    """A callback that must not be applied: bad signature, wrong corp id, stale, malformed."""


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


def aes_key(encoding_aes_key: str) -> bytes:
    if len(encoding_aes_key) != 43:
        raise ValueError("EncodingAESKey must be 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as exc:
        raise ValueError(f"EncodingAESKey is not base64: {exc}") from exc
    if len(key) != 32:
        raise ValueError("EncodingAESKey must decode to 32 bytes")
    return key


class MsgCrypt:
    """One app's callback crypto: its Token, EncodingAESKey and the receive id (the corp id)."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str):
        self.token, self.key, self.receive_id = token, aes_key(encoding_aes_key), receive_id

    def encrypt(self, message: str, *, random16: bytes | None = None) -> str:
        raw = message.encode()
        plain = (random16 or os.urandom(16)) + struct.pack(">I", len(raw)) + raw + self.receive_id.encode()
        pad = BLOCK - len(plain) % BLOCK
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> str:
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CallbackRejected(f"ciphertext is not base64: {exc}") from exc
        if not data or len(data) % 16:
            raise CallbackRejected(f"ciphertext length {len(data)} is not a multiple of the AES block")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise CallbackRejected("bad PKCS#7 padding (wrong EncodingAESKey?)")
        body = plain[16:-pad]
        if len(body) < 4:
            raise CallbackRejected("plaintext too short")
        (length,) = struct.unpack(">I", body[:4])
        if length > len(body) - 4:
            raise CallbackRejected("message length exceeds the plaintext")
        message, receive_id = body[4:4 + length], body[4 + length:]
        if not hmac.compare_digest(receive_id, self.receive_id.encode()):
            raise CallbackRejected(f"receive id {receive_id[:64]!r} is not this corp")
        try:
            return message.decode()
        except UnicodeDecodeError as exc:
            raise CallbackRejected("message is not UTF-8") from exc

    def check(self, msg_signature: str | None, timestamp: str | None, nonce: str | None, encrypted: str,
              *, now: float | None = None) -> None:
        """Refuse a wrong signature and a timestamp outside ±MAX_SKEW (a replay of an old callback)."""
        if not msg_signature or not timestamp or not nonce:
            raise CallbackRejected("msg_signature, timestamp and nonce are required")
        expected = signature(self.token, timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected, msg_signature.lower()):
            raise CallbackRejected("msg_signature does not match")
        try:
            skew = abs((time.time() if now is None else now) - int(timestamp))
        except ValueError as exc:
            raise CallbackRejected(f"timestamp {timestamp[:20]!r} is not a number") from exc
        if skew > MAX_SKEW:
            raise CallbackRejected(f"timestamp is {skew:.0f} s away from now (stale or replayed)")

    def verify_url(self, msg_signature: str | None, timestamp: str | None, nonce: str | None,
                   echostr: str | None, *, now: float | None = None) -> str:
        """The GET WeCom sends when the callback URL is saved: answer with the decrypted echostr."""
        if not echostr:
            raise CallbackRejected("echostr is required")
        self.check(msg_signature, timestamp, nonce, echostr, now=now)
        return self.decrypt(echostr)

    def open(self, body: bytes, msg_signature: str | None, timestamp: str | None, nonce: str | None,
             *, now: float | None = None) -> Element:
        """The decrypted event of a POSTed callback, as XML; every check before anything is parsed."""
        if len(body) > MAX_BODY:
            raise CallbackRejected(f"body of {len(body)} bytes is too large")
        encrypted = _text(parse_xml(body), "Encrypt")
        self.check(msg_signature, timestamp, nonce, encrypted, now=now)
        return parse_xml(self.decrypt(encrypted).encode())

    def seal(self, message: str, nonce: str, timestamp: str | None = None) -> str:
        """An encrypted, signed envelope, as WeCom sends callbacks (the simulator) or takes replies."""
        timestamp = timestamp or str(int(time.time()))
        encrypted = self.encrypt(message)
        sig = signature(self.token, timestamp, nonce, encrypted)
        return (f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt><MsgSignature><![CDATA[{sig}]]></MsgSignature>"
                f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>")

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))


def parse_xml(data: bytes) -> Element:
    """XML from outside, parsed without entities or DTDs (no billion laughs, no external entities)."""
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except Exception as exc:  # ParseError, DTDForbidden, EntitiesForbidden, ...
        raise CallbackRejected(f"malformed XML: {type(exc).__name__}: {str(exc)[:120]}") from exc
    if root.tag != "xml":
        raise CallbackRejected(f"root element is <{root.tag[:32]}>, not <xml>")
    return root


def _text(root: Element, tag: str) -> str:
    value = root.findtext(tag)
    if not value:
        raise CallbackRejected(f"<{tag}> is missing")
    return value.strip()


def fields(root: Element) -> dict[str, str]:
    """A flat event's fields (`<ToUserName>`, `<Event>`, `<TaskId>` …) as a dict of texts."""
    return {child.tag: (child.text or "").strip() for child in root if len(child) == 0}
