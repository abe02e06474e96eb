"""OMA DS Device Information 1.2 (``./devinf12``): the model, read from and written to the
neutral element tree that ``engine.protocols.syncml`` carries in an Item's ``data``.

A client Puts its DevInf and the server answers a Get with Results holding its own; both say
which datastores exist, which content types each sends and receives (``Rx-Pref``/``Tx-Pref``),
which sync types it supports (``SyncCap``) and whether it handles large objects and
NumberOfChanges. ``parse_devinf(element) -> DevInf`` and ``devinf_element(devinf) -> Element``
convert; elements are written in the order of the DevInf 1.2 DTD.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.protocols.syncml import DEVINF_TYPE_WBXML, DEVINF_TYPE_XML  # noqa: F401 (re-export)
from engine.protocols.wbxml import Element, WbxmlError
from engine.protocols.wbxml_tables import DEVINF_NS

#: Where devices and servers publish their DevInf (DS 1.2).
DEVINF_URI = "./devinf12"


class DevInfError(ValueError):
    """The DevInf document lacks something the DTD requires."""


@dataclass(slots=True)
class ContentType:
    """A content type and its version (``CTType``/``VerCT``), e.g. ``text/vcard`` ``3.0``."""

    ct_type: str
    ver_ct: str


@dataclass(slots=True)
class PropParam:
    name: str
    data_type: str | None = None
    val_enum: list[str] = field(default_factory=list)
    display_name: str | None = None


@dataclass(slots=True)
class Property:
    name: str
    data_type: str | None = None
    max_occur: int | None = None
    max_size: int | None = None
    no_truncate: bool = False
    val_enum: list[str] = field(default_factory=list)
    display_name: str | None = None
    params: list[PropParam] = field(default_factory=list)


@dataclass(slots=True)
class CTCap:
    """What the device stores of a content type, property by property."""

    ct_type: str
    ver_ct: str
    properties: list[Property] = field(default_factory=list)
    field_level: bool = False


@dataclass(slots=True)
class DataStore:
    source_ref: str
    rx_pref: ContentType
    tx_pref: ContentType
    sync_types: list[int]
    display_name: str | None = None
    max_guid_size: int | None = None
    rx: list[ContentType] = field(default_factory=list)
    tx: list[ContentType] = field(default_factory=list)
    ctcaps: list[CTCap] = field(default_factory=list)
    max_mem: int | None = None
    max_id: int | None = None
    shared_mem: bool = False
    support_hierarchical_sync: bool = False


@dataclass(slots=True)
class Ext:
    xnam: str
    xval: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DevInf:
    dev_id: str
    dev_typ: str
    datastores: list[DataStore] = field(default_factory=list)
    ver_dtd: str = "1.2"
    man: str | None = None
    mod: str | None = None
    oem: str | None = None
    fw_v: str | None = None
    sw_v: str | None = None
    hw_v: str | None = None
    utc: bool = False
    support_large_objs: bool = False
    support_number_of_changes: bool = False
    ext: list[Ext] = field(default_factory=list)


# -- reading -------------------------------------------------------------------------------


def _text(element: Element) -> str:
    try:
        return element.text.strip()
    except WbxmlError as exc:
        raise DevInfError(str(exc)) from exc


def _int(element: Element) -> int:
    text = _text(element)
    if not text.isdigit() or len(text) > 12:
        raise DevInfError(f"<{element.tag}> must be a number, not {text[:20]!r}")
    return int(text)


def _need(value: object, what: str) -> None:
    if value is None:
        raise DevInfError(f"{what} is missing")


def _content_type(element: Element) -> ContentType:
    ct_type = ver_ct = None
    for child in element.elements():
        if child.tag == "CTType":
            ct_type = _text(child)
        elif child.tag == "VerCT":
            ver_ct = _text(child)
    _need(ct_type, f"<{element.tag}> <CTType>")
    return ContentType(ct_type, ver_ct or "")  # type: ignore[arg-type]


def _prop_param(element: Element) -> PropParam:
    param = PropParam("")
    for child in element.elements():
        tag = child.tag
        if tag == "ParamName":
            param.name = _text(child)
        elif tag == "DataType":
            param.data_type = _text(child)
        elif tag == "ValEnum":
            param.val_enum.append(_text(child))
        elif tag == "DisplayName":
            param.display_name = _text(child)
    if not param.name:
        raise DevInfError("<PropParam> <ParamName> is missing")
    return param


def _property(element: Element) -> Property:
    prop = Property("")
    for child in element.elements():
        tag = child.tag
        if tag == "PropName":
            prop.name = _text(child)
        elif tag == "DataType":
            prop.data_type = _text(child)
        elif tag == "MaxOccur":
            prop.max_occur = _int(child)
        elif tag == "MaxSize":
            prop.max_size = _int(child)
        elif tag == "NoTruncate":
            prop.no_truncate = True
        elif tag == "ValEnum":
            prop.val_enum.append(_text(child))
        elif tag == "DisplayName":
            prop.display_name = _text(child)
        elif tag == "PropParam":
            prop.params.append(_prop_param(child))
    if not prop.name:
        raise DevInfError("<Property> <PropName> is missing")
    return prop


def _ctcap(element: Element) -> CTCap:
    cap = CTCap("", "")
    for child in element.elements():
        tag = child.tag
        if tag == "CTType":
            cap.ct_type = _text(child)
        elif tag == "VerCT":
            cap.ver_ct = _text(child)
        elif tag == "FieldLevel":
            cap.field_level = True
        elif tag == "Property":
            cap.properties.append(_property(child))
    if not cap.ct_type:
        raise DevInfError("<CTCap> <CTType> is missing")
    return cap


def _datastore(element: Element) -> DataStore:
    values: dict[str, object] = {}
    store = DataStore("", ContentType("", ""), ContentType("", ""), [])
    for child in element.elements():
        tag = child.tag
        if tag == "SourceRef":
            values[tag] = _text(child)
        elif tag == "DisplayName":
            store.display_name = _text(child)
        elif tag == "MaxGUIDSize":
            store.max_guid_size = _int(child)
        elif tag in ("Rx-Pref", "Tx-Pref"):
            values[tag] = _content_type(child)
        elif tag == "Rx":
            store.rx.append(_content_type(child))
        elif tag == "Tx":
            store.tx.append(_content_type(child))
        elif tag == "CTCap":
            store.ctcaps.append(_ctcap(child))
        elif tag == "DSMem":
            for part in child.elements():
                if part.tag == "MaxMem":
                    store.max_mem = _int(part)
                elif part.tag == "MaxID":
                    store.max_id = _int(part)
                elif part.tag == "SharedMem":
                    store.shared_mem = True
        elif tag == "SyncCap":
            values[tag] = [_int(part) for part in child.elements() if part.tag == "SyncType"]
        elif tag == "SupportHierarchicalSync":
            store.support_hierarchical_sync = True
    for tag in ("SourceRef", "Rx-Pref", "Tx-Pref", "SyncCap"):
        _need(values.get(tag), f"<DataStore> <{tag}>")
    store.source_ref = values["SourceRef"]  # type: ignore[assignment]
    store.rx_pref = values["Rx-Pref"]  # type: ignore[assignment]
    store.tx_pref = values["Tx-Pref"]  # type: ignore[assignment]
    store.sync_types = values["SyncCap"]  # type: ignore[assignment]
    return store


def parse_devinf(element: Element) -> DevInf:
    """Read a ``DevInf`` element (from XML or an embedded WBXML document); raises
    :class:`DevInfError` when a required element is missing or a number is not one. CTCaps
    at the top level (DevInf 1.1) are attached to the datastore receiving their type."""
    if element.tag != "DevInf":
        raise DevInfError(f"expected <DevInf>, found <{element.tag}>")
    info = DevInf("", "")
    loose_caps: list[CTCap] = []
    simple = {
        "VerDTD": "ver_dtd",
        "Man": "man",
        "Mod": "mod",
        "OEM": "oem",
        "FwV": "fw_v",
        "SwV": "sw_v",
        "HwV": "hw_v",
        "DevID": "dev_id",
        "DevTyp": "dev_typ",
    }
    flags = {
        "UTC": "utc",
        "SupportLargeObjs": "support_large_objs",
        "SupportNumberOfChanges": "support_number_of_changes",
    }
    for child in element.elements():
        tag = child.tag
        if tag in simple:
            setattr(info, simple[tag], _text(child))
        elif tag in flags:
            setattr(info, flags[tag], True)
        elif tag == "DataStore":
            info.datastores.append(_datastore(child))
        elif tag == "CTCap":
            loose_caps.append(_ctcap(child))
        elif tag == "Ext":
            ext = Ext("")
            for part in child.elements():
                if part.tag == "XNam":
                    ext.xnam = _text(part)
                elif part.tag == "XVal":
                    ext.xval.append(_text(part))
            info.ext.append(ext)
    if not info.dev_id or not info.dev_typ:
        raise DevInfError("<DevInf> needs <DevID> and <DevTyp>")
    for cap in loose_caps:
        for store in info.datastores:
            if cap.ct_type in {store.rx_pref.ct_type, *(ct.ct_type for ct in store.rx)}:
                store.ctcaps.append(cap)
    return info


# -- writing -------------------------------------------------------------------------------


def _leaf(tag: str, text: str) -> Element:
    return Element(tag, DEVINF_NS, [text])


def _flag(tag: str) -> Element:
    return Element(tag, DEVINF_NS)


def _ct(tag: str, ct: ContentType) -> Element:
    return Element(tag, DEVINF_NS, [_leaf("CTType", ct.ct_type), _leaf("VerCT", ct.ver_ct)])


def _property_element(prop: Property) -> Element:
    children: list[Element | str | bytes] = [_leaf("PropName", prop.name)]
    if prop.data_type is not None:
        children.append(_leaf("DataType", prop.data_type))
    if prop.max_occur is not None:
        children.append(_leaf("MaxOccur", str(prop.max_occur)))
    if prop.max_size is not None:
        children.append(_leaf("MaxSize", str(prop.max_size)))
    if prop.no_truncate:
        children.append(_flag("NoTruncate"))
    children += [_leaf("ValEnum", value) for value in prop.val_enum]
    if prop.display_name is not None:
        children.append(_leaf("DisplayName", prop.display_name))
    for param in prop.params:
        parts: list[Element | str | bytes] = [_leaf("ParamName", param.name)]
        if param.data_type is not None:
            parts.append(_leaf("DataType", param.data_type))
        parts += [_leaf("ValEnum", value) for value in param.val_enum]
        if param.display_name is not None:
            parts.append(_leaf("DisplayName", param.display_name))
        children.append(Element("PropParam", DEVINF_NS, parts))
    return Element("Property", DEVINF_NS, children)


def _datastore_element(store: DataStore) -> Element:
    children: list[Element | str | bytes] = [_leaf("SourceRef", store.source_ref)]
    if store.display_name is not None:
        children.append(_leaf("DisplayName", store.display_name))
    if store.max_guid_size is not None:
        children.append(_leaf("MaxGUIDSize", str(store.max_guid_size)))
    children.append(_ct("Rx-Pref", store.rx_pref))
    children += [_ct("Rx", ct) for ct in store.rx]
    children.append(_ct("Tx-Pref", store.tx_pref))
    children += [_ct("Tx", ct) for ct in store.tx]
    for cap in store.ctcaps:
        parts: list[Element | str | bytes] = [
            _leaf("CTType", cap.ct_type),
            _leaf("VerCT", cap.ver_ct),
        ]
        if cap.field_level:
            parts.append(_flag("FieldLevel"))
        parts += [_property_element(prop) for prop in cap.properties]
        children.append(Element("CTCap", DEVINF_NS, parts))
    if store.max_mem is not None or store.max_id is not None or store.shared_mem:
        mem: list[Element | str | bytes] = []
        if store.shared_mem:
            mem.append(_flag("SharedMem"))
        if store.max_mem is not None:
            mem.append(_leaf("MaxMem", str(store.max_mem)))
        if store.max_id is not None:
            mem.append(_leaf("MaxID", str(store.max_id)))
        children.append(Element("DSMem", DEVINF_NS, mem))
    if store.support_hierarchical_sync:
        children.append(_flag("SupportHierarchicalSync"))
    children.append(
        Element(
            "SyncCap",
            DEVINF_NS,
            [_leaf("SyncType", str(sync_type)) for sync_type in store.sync_types],
        )
    )
    return Element("DataStore", DEVINF_NS, children)


def devinf_element(info: DevInf) -> Element:
    """The ``DevInf`` element of ``info``, children in DevInf 1.2 DTD order:
    VerDTD, Man?, Mod?, OEM?, FwV?, SwV?, HwV?, DevID, DevTyp, UTC?, SupportLargeObjs?,
    SupportNumberOfChanges?, DataStore+, Ext*."""
    children: list[Element | str | bytes] = [_leaf("VerDTD", info.ver_dtd)]
    for tag, value in (
        ("Man", info.man),
        ("Mod", info.mod),
        ("OEM", info.oem),
        ("FwV", info.fw_v),
        ("SwV", info.sw_v),
        ("HwV", info.hw_v),
    ):
        if value is not None:
            children.append(_leaf(tag, value))
    children.append(_leaf("DevID", info.dev_id))
    children.append(_leaf("DevTyp", info.dev_typ))
    if info.utc:
        children.append(_flag("UTC"))
    if info.support_large_objs:
        children.append(_flag("SupportLargeObjs"))
    if info.support_number_of_changes:
        children.append(_flag("SupportNumberOfChanges"))
    children += [_datastore_element(store) for store in info.datastores]
    for ext in info.ext:
        children.append(
            Element(
                "Ext",
                DEVINF_NS,
                [_leaf("XNam", ext.xnam), *(_leaf("XVal", value) for value in ext.xval)],
            )
        )
    return Element("DevInf", DEVINF_NS, children)


#: Child order of DevInf 1.2 elements (DTD), for checks in tests.
DTD_ORDER: dict[str, tuple[str, ...]] = {
    tag: tuple(order.split())
    for tag, order in {
        "DevInf": "VerDTD Man Mod OEM FwV SwV HwV DevID DevTyp UTC SupportLargeObjs "
        "SupportNumberOfChanges DataStore Ext",
        "DataStore": "SourceRef DisplayName MaxGUIDSize Rx-Pref Rx Tx-Pref Tx CTCap DSMem "
        "SupportHierarchicalSync SyncCap Filter-Rx FilterCap",
        "CTCap": "CTType VerCT FieldLevel Property",
        "Property": "PropName DataType MaxOccur MaxSize NoTruncate ValEnum DisplayName PropParam",
        "PropParam": "ParamName DataType ValEnum DisplayName",
        "DSMem": "SharedMem MaxMem MaxID",
        "Ext": "XNam XVal",
    }.items()
}
