"""The audit log: who did what to what, when, and from where.

Events are written inside the same unit of work as the change they describe, so the log can
never miss a committed change nor record one that was rolled back.
"""

from __future__ import annotations

import json
from typing import Any

from .ids import new_id
from .principals import Principal
from .timestamps import now


def audit_event(
    principal: Principal | None,
    action: str,
    *,
    organisation_id: str | None,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
    actor: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """A row for ``audit_events``; ``principal`` None means the service itself (e.g. init)."""
    return {
        "id": new_id(),
        "at": now(),
        "organisation_id": organisation_id,
        "actor_id": principal.account_id if principal else None,
        "actor": actor or (principal.label if principal else "service"),
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "details": json.dumps(details or {}, sort_keys=True, default=str),
        "source": source or (principal.source if principal else None),
    }
