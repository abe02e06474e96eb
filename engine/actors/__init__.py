"""The actor runtime and the long-lived actors: listeners, device sessions, notifiers."""

from .listener import DeviceRequest, Listener, ProtocolListener, start_listener
from .registry import Registry
from .runtime import (
    Actor,
    ActorCrashed,
    ActorDead,
    ActorError,
    ActorPassivated,
    ActorRef,
    Escalation,
    MailboxFull,
    Reply,
    RestartPolicy,
    Runner,
    spawn,
    start,
)
from .session import DeviceSession, SessionLogic

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorDead",
    "ActorError",
    "ActorPassivated",
    "ActorRef",
    "DeviceRequest",
    "DeviceSession",
    "Escalation",
    "Listener",
    "MailboxFull",
    "ProtocolListener",
    "Registry",
    "Reply",
    "RestartPolicy",
    "Runner",
    "SessionLogic",
    "spawn",
    "start",
    "start_listener",
]
