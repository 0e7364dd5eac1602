"""Async repositories: narrow, named for the use cases that need them, one module per kind of row.

Each takes an ``AsyncSession`` from ``Database.session()``; the caller owns the transaction. This
module is the index: ``from idp.storage.repositories import UserRepository`` works for each.
"""

from __future__ import annotations

from idp.storage.repositories.activity import ActivityRepository
from idp.storage.repositories.audit import AuditFilter, AuditRepository
from idp.storage.repositories.clients import ClientRepository
from idp.storage.repositories.codes import AuthorizationCodeRepository
from idp.storage.repositories.consents import ConsentRepository
from idp.storage.repositories.devices import DeviceRepository, Remembered
from idp.storage.repositories.errors import AlreadyTaken, LastAdministrator
from idp.storage.repositories.export import AccountRecords, ExportRepository
from idp.storage.repositories.keys import SigningKeyRepository
from idp.storage.repositories.links import LinkRepository
from idp.storage.repositories.maintenance import MaintenanceRepository
from idp.storage.repositories.mfa import MfaRepository, RecoveryCodeRepository
from idp.storage.repositories.passkeys import PasskeyRepository
from idp.storage.repositories.purge import AccountPurge
from idp.storage.repositories.refresh_tokens import RefreshTokenRepository, SessionFamily
from idp.storage.repositories.revocations import RevocationRepository, SessionClientRepository
from idp.storage.repositories.unit_of_work import UnitOfWork, UnitsOfWork
from idp.storage.repositories.users import UserRepository

__all__ = [
    "AccountPurge",
    "AccountRecords",
    "ActivityRepository",
    "AlreadyTaken",
    "AuditFilter",
    "AuditRepository",
    "AuthorizationCodeRepository",
    "ClientRepository",
    "ConsentRepository",
    "DeviceRepository",
    "ExportRepository",
    "LastAdministrator",
    "LinkRepository",
    "MaintenanceRepository",
    "MfaRepository",
    "PasskeyRepository",
    "RecoveryCodeRepository",
    "RefreshTokenRepository",
    "Remembered",
    "RevocationRepository",
    "SessionClientRepository",
    "SessionFamily",
    "SigningKeyRepository",
    "UnitOfWork",
    "UnitsOfWork",
    "UserRepository",
]
