"""The WBXML code pages of Exchange ActiveSync (MS-ASWBXML section 2.1.2.1), pages 0 to 25.

Each page is the XML namespace ActiveSync documents use for it and its tags with the token
values of the specification; a ``-`` keeps the place of a token the specification leaves
unused. ActiveSync documents carry public id 1 ("unknown") and charset UTF-8, so the
language is chosen by the endpoint, not by the header (``wbxml.decode(..., language=...)``).
Page 3 (AirNotify) is no longer used by any protocol version but keeps its tokens so that
old documents still decode.
"""

from __future__ import annotations

from engine.protocols.wbxml import Language

#: What an ActiveSync WBXML document's header says: unknown public id, UTF-8.
ACTIVESYNC_PUBLIC_ID = 0x01
ACTIVESYNC_PUBLIC_TEXT = "-//MICROSOFT//DTD ActiveSync//EN"


def _page(names: str, first: int = 0x05) -> dict[int, str]:
    """Tokens numbered from ``first`` in the order the specification lists them."""
    return {first + i: name for i, name in enumerate(names.split()) if name != "-"}


AIRSYNC = "AirSync"
CONTACTS = "Contacts"
EMAIL = "Email"
AIRNOTIFY = "AirNotify"
CALENDAR = "Calendar"
MOVE = "Move"
GET_ITEM_ESTIMATE = "GetItemEstimate"
FOLDER_HIERARCHY = "FolderHierarchy"
MEETING_RESPONSE = "MeetingResponse"
TASKS = "Tasks"
RESOLVE_RECIPIENTS = "ResolveRecipients"
VALIDATE_CERT = "ValidateCert"
CONTACTS2 = "Contacts2"
PING = "Ping"
PROVISION = "Provision"
SEARCH = "Search"
GAL = "GAL"
AIRSYNCBASE = "AirSyncBase"
SETTINGS = "Settings"
DOCUMENT_LIBRARY = "DocumentLibrary"
ITEM_OPERATIONS = "ItemOperations"
COMPOSE_MAIL = "ComposeMail"
EMAIL2 = "Email2"
NOTES = "Notes"
RIGHTS_MANAGEMENT = "RightsManagement"
FIND = "Find"

PAGES: dict[int, tuple[str, dict[int, str]]] = {
    0: (
        AIRSYNC,
        _page(
            "Sync Responses Add Change Delete Fetch SyncKey ClientId ServerId Status Collection "
            "Class - CollectionId GetChanges MoreAvailable WindowSize Commands Options "
            "FilterType Truncation - Conflict Collections ApplicationData DeletesAsMoves - "
            "Supported SoftDelete MIMESupport MIMETruncation Wait Limit Partial "
            "ConversationMode MaxItems HeartbeatInterval"
        ),
    ),
    1: (
        CONTACTS,
        _page(
            "Anniversary AssistantName AssistantPhoneNumber Birthday Body BodySize "
            "BodyTruncated Business2PhoneNumber BusinessAddressCity BusinessAddressCountry "
            "BusinessAddressPostalCode BusinessAddressState BusinessAddressStreet "
            "BusinessFaxNumber BusinessPhoneNumber CarPhoneNumber Categories Category Children "
            "Child CompanyName Department Email1Address Email2Address Email3Address FileAs "
            "FirstName Home2PhoneNumber HomeAddressCity HomeAddressCountry "
            "HomeAddressPostalCode HomeAddressState HomeAddressStreet HomeFaxNumber "
            "HomePhoneNumber JobTitle LastName MiddleName MobilePhoneNumber OfficeLocation "
            "OtherAddressCity OtherAddressCountry OtherAddressPostalCode OtherAddressState "
            "OtherAddressStreet PagerNumber RadioPhoneNumber Spouse Suffix Title WebPage "
            "YomiCompanyName YomiFirstName YomiLastName CompressedRTF Picture Alias "
            "WeightedRank"
        ),
    ),
    2: (
        EMAIL,
        _page(
            "Attachment Attachments AttName AttSize Att0Id AttMethod AttRemoved Body BodySize "
            "BodyTruncated DateReceived DisplayName DisplayTo Importance MessageClass Subject "
            "Read To Cc From ReplyTo AllDayEvent Categories Category DtStamp EndTime "
            "InstanceType BusyStatus Location MeetingRequest Organizer RecurrenceId Reminder "
            "ResponseRequested Recurrences Recurrence Type Until Occurrences Interval DayOfWeek "
            "DayOfMonth WeekOfMonth MonthOfYear StartTime Sensitivity TimeZone GlobalObjId "
            "ThreadTopic MIMEData MIMETruncated MIMESize InternetCPID Flag Status ContentClass "
            "FlagType CompleteTime DisallowNewTimeProposal"
        ),
    ),
    3: (
        AIRNOTIFY,
        _page(
            "Notify Notification Version LifeTime DeviceInfo Enable Folder ServerId "
            "DeviceAddress ValidCarrierProfiles CarrierProfile Status Responses Devices Device "
            "Id Expiry NotifyGUID DeviceFriendlyName"
        ),
    ),
    4: (
        CALENDAR,
        _page(
            "TimeZone AllDayEvent Attendees Attendee Email Name Body BodyTruncated BusyStatus "
            "Categories Category CompressedRTF DtStamp EndTime Exception Exceptions Deleted "
            "ExceptionStartTime Location MeetingStatus OrganizerEmail OrganizerName Recurrence "
            "Type Until Occurrences Interval DayOfWeek DayOfMonth WeekOfMonth MonthOfYear "
            "Reminder Sensitivity Subject StartTime UID AttendeeStatus AttendeeType - - - - - - "
            "- - DisallowNewTimeProposal ResponseRequested AppointmentReplyTime ResponseType "
            "CalendarType IsLeapMonth FirstDayOfWeek OnlineMeetingConfLink "
            "OnlineMeetingExternalLink ClientUid"
        ),
    ),
    5: (MOVE, _page("MoveItems Move SrcMsgId SrcFldId DstFldId Response Status DstMsgId")),
    6: (
        GET_ITEM_ESTIMATE,
        _page(
            "GetItemEstimate Version Collections Collection Class CollectionId DateTime "
            "Estimate Response Status"
        ),
    ),
    7: (
        FOLDER_HIERARCHY,
        _page(
            "Folders Folder DisplayName ServerId ParentId Type Response Status ContentClass "
            "Changes Add Delete Update SyncKey FolderCreate FolderDelete FolderUpdate FolderSync "
            "Count"
        ),
    ),
    8: (
        MEETING_RESPONSE,
        _page(
            "CalendarId CollectionId MeetingResponse RequestId Request Result Status "
            "UserResponse - InstanceId - - - SendResponse ProposedStartTime ProposedEndTime"
        ),
    ),
    9: (
        TASKS,
        _page(
            "Body BodySize BodyTruncated Categories Category Complete DateCompleted DueDate "
            "UtcDueDate Importance Recurrence Type Start Until Occurrences Interval DayOfMonth "
            "DayOfWeek WeekOfMonth MonthOfYear Regenerate DeadOccur ReminderSet ReminderTime "
            "Sensitivity StartDate UtcStartDate Subject CompressedRTF OrdinalDate "
            "SubOrdinalDate CalendarType IsLeapMonth FirstDayOfWeek"
        ),
    ),
    10: (
        RESOLVE_RECIPIENTS,
        _page(
            "ResolveRecipients Response Status Type Recipient DisplayName EmailAddress "
            "Certificates Certificate MiniCertificate Options To CertificateRetrieval "
            "RecipientCount MaxCertificates MaxAmbiguousRecipients CertificateCount "
            "Availability StartTime EndTime MergedFreeBusy Picture MaxSize Data MaxPictures"
        ),
    ),
    11: (
        VALIDATE_CERT,
        _page("ValidateCert Certificates Certificate CertificateChain CheckCRL Status"),
    ),
    12: (
        CONTACTS2,
        _page(
            "CustomerId GovernmentId IMAddress IMAddress2 IMAddress3 ManagerName "
            "CompanyMainPhone AccountName NickName MMS"
        ),
    ),
    13: (
        PING,
        _page("Ping AutdState Status HeartbeatInterval Folders Folder Id Class MaxFolders"),
    ),
    14: (
        PROVISION,
        _page(
            "Provision Policies Policy PolicyType PolicyKey Data Status RemoteWipe "
            "EASProvisionDoc DevicePasswordEnabled AlphanumericDevicePasswordRequired "
            "RequireStorageCardEncryption PasswordRecoveryEnabled - AttachmentsEnabled "
            "MinDevicePasswordLength MaxInactivityTimeDeviceLock "
            "MaxDevicePasswordFailedAttempts MaxAttachmentSize AllowSimpleDevicePassword "
            "DevicePasswordExpiration DevicePasswordHistory AllowStorageCard AllowCamera "
            "RequireDeviceEncryption AllowUnsignedApplications "
            "AllowUnsignedInstallationPackages MinDevicePasswordComplexCharacters AllowWiFi "
            "AllowTextMessaging AllowPOPIMAPEmail AllowBluetooth AllowIrDA "
            "RequireManualSyncWhenRoaming AllowDesktopSync MaxCalendarAgeFilter AllowHTMLEmail "
            "MaxEmailAgeFilter MaxEmailBodyTruncationSize MaxEmailHTMLBodyTruncationSize "
            "RequireSignedSMIMEMessages RequireEncryptedSMIMEMessages "
            "RequireSignedSMIMEAlgorithm RequireEncryptionSMIMEAlgorithm "
            "AllowSMIMEEncryptionAlgorithmNegotiation AllowSMIMESoftCerts AllowBrowser "
            "AllowConsumerEmail AllowRemoteDesktop AllowInternetSharing "
            "UnapprovedInROMApplicationList ApplicationName ApprovedApplicationList Hash "
            "AccountOnlyRemoteWipe"
        ),
    ),
    15: (
        SEARCH,
        _page(
            "Search - Store Name Query Options Range Status Response Result Properties Total "
            "EqualTo Value And Or FreeText - DeepTraversal LongId RebuildResults LessThan "
            "GreaterThan - - UserName Password ConversationId Picture MaxSize MaxPictures"
        ),
    ),
    16: (
        GAL,
        _page(
            "DisplayName Phone Office Title Company Alias FirstName LastName HomePhone "
            "MobilePhone EmailAddress Picture Status Data"
        ),
    ),
    17: (
        AIRSYNCBASE,
        _page(
            "BodyPreference Type TruncationSize AllOrNone - Body Data EstimatedDataSize "
            "Truncated Attachments Attachment DisplayName FileReference Method ContentId "
            "ContentLocation IsInline NativeBodyType ContentType Preview BodyPartPreference "
            "BodyPart Status Add Delete ClientId Content Location Annotation Street City State "
            "Country PostalCode Latitude Longitude Accuracy Altitude AltitudeAccuracy "
            "LocationUri InstanceId"
        ),
    ),
    18: (
        SETTINGS,
        _page(
            "Settings Status Get Set Oof OofState StartTime EndTime OofMessage "
            "AppliesToInternal AppliesToExternalKnown AppliesToExternalUnknown Enabled "
            "ReplyMessage BodyType DevicePassword Password DeviceInformation Model IMEI "
            "FriendlyName OS OSLanguage PhoneNumber UserInformation EmailAddresses SmtpAddress "
            "UserAgent EnableOutboundSMS MobileOperator PrimarySmtpAddress Accounts Account "
            "AccountId AccountName UserDisplayName SendDisabled - RightsManagementInformation"
        ),
    ),
    19: (
        DOCUMENT_LIBRARY,
        _page(
            "LinkId DisplayName IsFolder CreationDate LastModifiedDate IsHidden ContentLength "
            "ContentType"
        ),
    ),
    20: (
        ITEM_OPERATIONS,
        _page(
            "ItemOperations Fetch Store Options Range Total Properties Data Status Response "
            "Version Schema Part EmptyFolderContents DeleteSubFolders UserName Password Move "
            "DstFldId ConversationId MoveAlways"
        ),
    ),
    21: (
        COMPOSE_MAIL,
        _page(
            "SendMail SmartForward SmartReply SaveInSentItems ReplaceMime - Source FolderId "
            "ItemId LongId InstanceId Mime ClientId Status AccountId - Forwardees Forwardee "
            "ForwardeeName ForwardeeEmail"
        ),
    ),
    22: (
        EMAIL2,
        _page(
            "UmCallerID UmUserNotes UmAttDuration UmAttOrder ConversationId ConversationIndex "
            "LastVerbExecuted LastVerbExecutionTime ReceivedAsBcc Sender CalendarType "
            "IsLeapMonth AccountId FirstDayOfWeek MeetingMessageType - IsDraft Bcc Send"
        ),
    ),
    23: (NOTES, _page("Subject MessageClass LastModifiedDate Categories Category")),
    24: (
        RIGHTS_MANAGEMENT,
        _page(
            "RightsManagementSupport RightsManagementTemplates RightsManagementTemplate "
            "RightsManagementLicense EditAllowed ReplyAllowed ReplyAllAllowed ForwardAllowed "
            "ModifyRecipientsAllowed ExtractAllowed PrintAllowed ExportAllowed "
            "ProgrammaticAccessAllowed Owner ContentExpiryDate TemplateID TemplateName "
            "TemplateDescription ContentOwner RemoveRightsManagementProtection"
        ),
    ),
    25: (
        FIND,
        {
            **_page(
                "Find SearchId ExecuteSearch MailBoxSearchCriterion Query Status FreeText "
                "Options Range DeepTraversal - - Response Result Properties Preview "
                "HasAttachments Total DisplayCc DisplayBcc GalSearchCriterion"
            ),
            0x20: "MaxPictures",
            0x21: "MaxSize",
            0x22: "Picture",
        },
    ),
}

ACTIVESYNC = Language(
    name="ActiveSync",
    public_id=ACTIVESYNC_PUBLIC_ID,
    public_text=ACTIVESYNC_PUBLIC_TEXT,
    root="",
    pages=PAGES,
)
