"""WebRTC settings for the webcam stream (the ICE servers), read from the environment."""

from __future__ import annotations

import json
import os

from facetracker.config.jsonconfig import parse_json

ICE_SERVERS_ENV = "FACETRACKER_ICE_SERVERS"


def rtc_configuration(environ: dict | None = None) -> tuple[dict, str | None]:
    """WebRTC ICE settings and a warning when the environment's were unusable.

    On localhost (and within one network) no STUN/TURN server is needed: `{"iceServers": []}` also
    avoids a stall of several seconds trying to reach a STUN server offline. For remote use set
    FACETRACKER_ICE_SERVERS to a JSON list such as
    `[{"urls": ["stun:stun.l.google.com:19302"]}, {"urls": "turn:host:3478", "username": "u", "credential": "p"}]`.
    """
    raw = (environ if environ is not None else os.environ).get(ICE_SERVERS_ENV, "").strip()
    if not raw:
        return {"iceServers": []}, None
    try:
        servers = parse_json(raw)
    except ValueError as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else error
        return {"iceServers": []}, f"{ICE_SERVERS_ENV} is not valid JSON ({reason}); using no STUN/TURN server"
    if isinstance(servers, dict) and "iceServers" in servers:
        servers = servers["iceServers"]
    if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
        return {"iceServers": []}, (f"{ICE_SERVERS_ENV} must be a JSON list of objects with \"urls\"; "
                                    "using no STUN/TURN server")
    return {"iceServers": servers}, None
