"""WBXML language tables of SyncML 1.2: the SyncML and MetInf code pages and DevInf 1.2.

Token values are those of the OMA specifications (SyncML Representation Protocol 1.2,
Meta Information 1.2, DS Device Information 1.2), which Debian's libwbxml uses too; the
namespaces are the ones SyncML XML documents declare for each code page. OMA DM shares the
SyncML pages (``DM_1_2`` differs only in its public id).
"""

from __future__ import annotations

from engine.protocols.wbxml import Language

SYNCML_NS = "SYNCML:SYNCML1.2"
METINF_NS = "syncml:metinf"
DEVINF_NS = "syncml:devinf"

SYNCML_1_2_PUBLIC = "-//SYNCML//DTD SyncML 1.2//EN"
DEVINF_1_2_PUBLIC = "-//SYNCML//DTD DevInf 1.2//EN"
METINF_1_2_PUBLIC = "-//SYNCML//DTD MetInf 1.2//EN"

#: Registered WBXML public ids (OMA naming authority).
SYNCML_1_2_ID = 0x1201
METINF_1_2_ID = 0x1202
DEVINF_1_2_ID = 0x1203


def _page(first: int, names: str) -> dict[int, str]:
    """Tokens numbered from ``first`` in the order the specification lists them."""
    return {first + i: name for i, name in enumerate(names.split()) if name != "-"}


#: Code page 0: SyncML (0x30 is reserved).
SYNCML_PAGE = _page(
    0x05,
    "Add Alert Archive Atomic Chal Cmd CmdID CmdRef Copy Cred Data Delete Exec Final Get Item "
    "Lang LocName LocURI Map MapItem Meta MsgID MsgRef NoResp NoResults Put Replace RespURI "
    "Results Search Sequence SessionID SftDel Source SourceRef Status Sync SyncBody SyncHdr "
    "SyncML Target TargetRef - VerDTD VerProto NumberOfChanges MoreData Field Filter Record "
    "FilterType SourceParent TargetParent Move Correlator",
)

#: Code page 1: MetInf.
METINF_PAGE = _page(
    0x05,
    "Anchor EMI Format FreeID FreeMem Last Mark MaxMsgSize Mem MetInf Next NextNonce SharedMem "
    "Size Type Version MaxObjSize FieldLevel",
)

#: DevInf 1.2, its own document with one code page (0x2f is reserved).
DEVINF_PAGE = _page(
    0x05,
    "CTCap CTType DataStore DataType DevID DevInf DevTyp DisplayName DSMem Ext FwV HwV Man "
    "MaxGUIDSize MaxID MaxMem Mod OEM ParamName PropName Rx Rx-Pref SharedMem MaxSize SourceRef "
    "SwV SyncCap SyncType Tx Tx-Pref ValEnum VerCT VerDTD XNam XVal UTC SupportNumberOfChanges "
    "SupportLargeObjs Property PropParam MaxOccur NoTruncate - Filter-Rx FilterCap FilterKeyword "
    "FieldLevel SupportHierarchicalSync",
)

SYNCML_1_2 = Language(
    name="SyncML 1.2",
    public_id=SYNCML_1_2_ID,
    public_text=SYNCML_1_2_PUBLIC,
    root="SyncML",
    pages={0: (SYNCML_NS, SYNCML_PAGE), 1: (METINF_NS, METINF_PAGE)},
)

DEVINF_1_2 = Language(
    name="DevInf 1.2",
    public_id=DEVINF_1_2_ID,
    public_text=DEVINF_1_2_PUBLIC,
    root="DevInf",
    pages={0: (DEVINF_NS, DEVINF_PAGE)},
)

#: SyncML 1.1 and DevInf 1.1 use the same tokens (1.2 only added some); older libwbxml
#: releases registered them under other numbers, hence the aliases.
SYNCML_1_1 = Language(
    name="SyncML 1.1",
    public_id=0x0FD3,
    public_text="-//SYNCML//DTD SyncML 1.1//EN",
    root="SyncML",
    pages={0: ("SYNCML:SYNCML1.1", SYNCML_PAGE), 1: (METINF_NS, METINF_PAGE)},
    aliases=(0x0F21,),
)
DEVINF_1_1 = Language(
    name="DevInf 1.1",
    public_id=0x0FD4,
    public_text="-//SYNCML//DTD DevInf 1.1//EN",
    root="DevInf",
    pages={0: (DEVINF_NS, DEVINF_PAGE)},
    aliases=(0x0F2D,),
)

#: The languages a SyncML peer may send, for ``wbxml.decode``.
SYNCML_LANGUAGES = (SYNCML_1_2, SYNCML_1_1, DEVINF_1_2, DEVINF_1_1)
#: The languages of a DevInf document embedded in a WBXML message's item data.
DEVINF_LANGUAGES = (DEVINF_1_2, DEVINF_1_1)
