"""Configuration: the bootstrap file the process starts from, and the service settings
model that the supervisor and organisations edit at run time.

Pure code only (no trio, no SQL, no web), so both halves are testable without a service.
"""

from engine.config.bootstrap import (
    Bootstrap,
    ClientCertificates,
    ConfigError,
    Database,
    Limits,
    Listen,
    ListenAddress,
    LogLevel,
    Tls,
    Xmpp,
    load_bootstrap,
    render_bootstrap,
)
from engine.config.services import (
    SERVICES,
    Field,
    OrganisationServiceSettings,
    OrganisationSettings,
    ServiceSpec,
    SettingsError,
    SourcedValue,
    SystemSettings,
    apply_organisation_change,
    apply_system_change,
    effective_settings,
    effective_with_sources,
    system_defaults,
    validate_values,
)

__all__ = [
    "SERVICES",
    "Bootstrap",
    "ClientCertificates",
    "ConfigError",
    "Database",
    "Field",
    "Limits",
    "Listen",
    "ListenAddress",
    "LogLevel",
    "OrganisationServiceSettings",
    "OrganisationSettings",
    "ServiceSpec",
    "SettingsError",
    "SourcedValue",
    "SystemSettings",
    "Tls",
    "Xmpp",
    "apply_organisation_change",
    "apply_system_change",
    "effective_settings",
    "effective_with_sources",
    "load_bootstrap",
    "render_bootstrap",
    "system_defaults",
    "validate_values",
]
