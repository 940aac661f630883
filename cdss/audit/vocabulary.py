"""Audit event vocabulary from DICOM PS3.15 A.5 / PS3.16 (DCM coding scheme).

The node records each event with its DCM Event ID, an optional Event Type Code (subtype), the
Event Action Code and the Event Outcome Indicator exactly as the audit message format defines them.
"""

from __future__ import annotations

from enum import Enum, IntEnum, StrEnum

__all__ = ["Action", "EventID", "EventType", "Outcome"]


class EventID(Enum):
    """Event ID (DCM code, meaning) of PS3.15 A.5.3."""

    APPLICATION_ACTIVITY = ("110100", "Application Activity")
    AUDIT_LOG_USED = ("110101", "Audit Log Used")
    BEGIN_TRANSFERRING = ("110102", "Begin Transferring DICOM Instances")
    INSTANCES_ACCESSED = ("110103", "DICOM Instances Accessed")
    INSTANCES_TRANSFERRED = ("110104", "DICOM Instances Transferred")
    STUDY_DELETED = ("110105", "DICOM Study Deleted")
    EXPORT = ("110106", "Export")
    IMPORT = ("110107", "Import")
    QUERY = ("110112", "Query")
    SECURITY_ALERT = ("110113", "Security Alert")
    USER_AUTHENTICATION = ("110114", "User Authentication")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def meaning(self) -> str:
        return self.value[1]


class EventType(Enum):
    """Event Type Codes (subtypes, DCM) used by the node."""

    APPLICATION_START = ("110120", "Application Start")
    APPLICATION_STOP = ("110121", "Application Stop")
    LOGIN = ("110122", "Login")
    LOGOUT = ("110123", "Logout")
    NODE_AUTHENTICATION = ("110126", "Node Authentication")
    SECURITY_CONFIGURATION = ("110129", "Security Configuration")
    SOFTWARE_CONFIGURATION = ("110131", "Software Configuration")
    USE_OF_RESTRICTED_FUNCTION = ("110132", "Use of Restricted Function")
    OBJECT_SECURITY_ATTRIBUTES_CHANGED = ("110135", "Object Security Attributes Changed")
    SECURITY_ROLES_CHANGED = ("110136", "Security Roles Changed")
    USER_SECURITY_ATTRIBUTES_CHANGED = ("110137", "User security Attributes Changed")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def meaning(self) -> str:
        return self.value[1]


class Action(StrEnum):
    """Event Action Code."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(IntEnum):
    """Event Outcome Indicator."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12
