"""Which nodes of a device's management tree the service reads and writes, per platform.

Data, not code: a :class:`NodeProfile` lists the nodes read for the inventory (and which
inventory field each fills) and, per generic command kind, the OMA DM actions that carry it
out. :mod:`engine.omadm` turns them into SyncML commands; a platform gains support for a
command by an entry here.

* **Windows** (MS-MDM and Microsoft's configuration service providers): DevDetail and
  DeviceStatus for the inventory, RemoteLock ``Lock``, RemoteWipe ``doWipe``, DMClient
  ``Unenroll`` (Exec) for the enterprise wipe (unenrolment removes what the organisation put on
  the device), Reboot ``RebootNow``; Policy CSP settings under ``./Device/Vendor/MSFT/
  Policy/Config/<Area>/<Policy>`` (:func:`policy_uri`).
* **Plain OMA DM** (Android and other phones): the standard ``./DevInfo`` and ``./DevDetail``
  objects, and OMA LAWMO 1.0 (``./LAWMO/Operations/...``) for lock, unlock and wipe.

``{provider}`` in a path stands for the DMClient provider id the enrolment gave the device;
``{message}`` in data for the command's parameter of that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Action:
    """One management command: ``verb`` Get, Add, Replace, Delete or Exec on ``uri``."""

    verb: str
    uri: str
    data: str | None = None
    format: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class NodeProfile:
    name: str
    #: Nodes read for the inventory, and the inventory field each fills.
    inventory: Mapping[str, str]
    #: Generic command kind → the actions that carry it out (Atomic when more than one).
    commands: Mapping[str, tuple[Action, ...]]
    #: Where device columns come from: column → node.
    columns: Mapping[str, str]


_DEVINFO = {
    "./DevInfo/DevId": "device_id",
    "./DevInfo/Man": "manufacturer",
    "./DevInfo/Mod": "model",
    "./DevInfo/DmV": "dm_version",
    "./DevInfo/Lang": "language",
}

WINDOWS = NodeProfile(
    "windows",
    inventory=MappingProxyType(
        {
            "./DevDetail/SwV": "os_version",
            "./DevDetail/OEM": "oem",
            "./DevDetail/FwV": "firmware_version",
            "./DevDetail/HwV": "hardware_version",
            "./DevDetail/DevTyp": "device_type",
            "./DevDetail/Ext/Microsoft/DeviceName": "device_name",
            "./DevDetail/Ext/Microsoft/OSPlatform": "os_platform",
            "./DevDetail/Ext/Microsoft/TotalStorage": "total_storage_mb",
            "./DevDetail/Ext/Microsoft/TotalRAM": "total_ram_mb",
            "./Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance": "encryption_compliant",
        }
    ),
    commands=MappingProxyType(
        {
            "lock": (Action("Exec", "./Vendor/MSFT/RemoteLock/Lock"),),
            "unlock": (Action("Exec", "./Vendor/MSFT/RemoteLock/LockAndResetPIN"),),
            "wipe": (Action("Exec", "./Device/Vendor/MSFT/RemoteWipe/doWipe"),),
            "enterprise_wipe": (
                Action("Exec", "./Vendor/MSFT/DMClient/Provider/{provider}/Unenroll", "{provider}"),
            ),
            "reboot": (Action("Exec", "./Device/Vendor/MSFT/Reboot/RebootNow"),),
        }
    ),
    columns=MappingProxyType(
        {
            "os_version": "./DevDetail/SwV",
            "model": "./DevInfo/Mod",
            "name": "./DevDetail/Ext/Microsoft/DeviceName",
        }
    ),
)

GENERIC = NodeProfile(
    "generic",
    inventory=MappingProxyType(
        {
            **_DEVINFO,
            "./DevDetail/DevTyp": "device_type",
            "./DevDetail/OEM": "oem",
            "./DevDetail/FwV": "firmware_version",
            "./DevDetail/SwV": "os_version",
            "./DevDetail/HwV": "hardware_version",
        }
    ),
    commands=MappingProxyType(
        {
            "lock": (Action("Exec", "./LAWMO/Operations/PartiallyLock"),),
            "unlock": (Action("Exec", "./LAWMO/Operations/UnLock"),),
            "wipe": (Action("Exec", "./LAWMO/Operations/FactoryReset"),),
            "enterprise_wipe": (Action("Exec", "./LAWMO/Operations/Wipe"),),
        }
    ),
    columns=MappingProxyType({"os_version": "./DevDetail/SwV", "model": "./DevInfo/Mod"}),
)

PROFILES = MappingProxyType({"windows": WINDOWS})


def profile_of(platform: str) -> NodeProfile:
    """The node profile of a device's platform (plain OMA DM for all but Windows)."""
    return PROFILES.get(platform, GENERIC)


#: Windows' unenrolment through DMClient (an Exec whose data is the provider id), sent when a
#: manager asked for it ("IT admin-requested disconnection" in Microsoft's documentation).
WINDOWS_UNENROL = Action(
    "Exec", "./Vendor/MSFT/DMClient/Provider/{provider}/Unenroll", "{provider}"
)


def policy_uri(area: str, policy: str, *, user: bool = False) -> str:
    """The Policy CSP node of one setting (``./Device/...`` or ``./User/...`` scope)."""
    scope = "./User" if user else "./Device"
    return f"{scope}/Vendor/MSFT/Policy/Config/{area}/{policy}"
