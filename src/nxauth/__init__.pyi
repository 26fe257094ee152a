# The public API of nxauth, listed once: each line names a public name and the
# module that defines it.  ``nxauth/__init__.py`` reads this file to load the
# names on first use, and builds ``__all__`` from it; type checkers read it as
# the package's interface.  Everything not listed here is private.

from nxauth._version import __version__ as __version__
from nxauth.admission import Admission as Admission
from nxauth.admission import Overloaded as Overloaded
from nxauth.codes import AdminAction as AdminAction
from nxauth.codes import Method as Method
from nxauth.codes import Outcome as Outcome
from nxauth.codes import Reason as Reason
from nxauth.config import BackendConfig as BackendConfig
from nxauth.config import Config as Config
from nxauth.config import Control as Control
from nxauth.config import Options as Options
from nxauth.config import default_config_path as default_config_path
from nxauth.config import load_config as load_config
from nxauth.config import parse_config as parse_config
from nxauth.core.authenticator import Authenticator as Authenticator
from nxauth.core.session import Session as Session
from nxauth.core.session import SessionState as SessionState
from nxauth.details import is_detail_word as is_detail_word
from nxauth.errors import AuthenticationFailed as AuthenticationFailed
from nxauth.errors import BackendError as BackendError
from nxauth.errors import ConfigError as ConfigError
from nxauth.errors import KeyFormatError as KeyFormatError
from nxauth.errors import NotAuthenticated as NotAuthenticated
from nxauth.errors import NxauthError as NxauthError
from nxauth.errors import PluginError as PluginError
from nxauth.errors import StoreError as StoreError
from nxauth.errors import UsageError as UsageError
from nxauth.model import AdminEvent as AdminEvent
from nxauth.model import Attempt as Attempt
from nxauth.model import AuthEvent as AuthEvent
from nxauth.model import Conversation as Conversation
from nxauth.model import ConversationFailed as ConversationFailed
from nxauth.model import ConversationUnavailable as ConversationUnavailable
from nxauth.model import Decision as Decision
from nxauth.model import Identity as Identity
from nxauth.model import Peer as Peer
from nxauth.model import Secret as Secret
from nxauth.model import TransportGrant as TransportGrant
from nxauth.model import Verdict as Verdict
from nxauth.plugins.hookspecs import hookimpl as hookimpl
from nxauth.plugins.registry import BackendContext as BackendContext
from nxauth.plugins.registry import BackendFactory as BackendFactory
from nxauth.plugins.registry import BackendRegistry as BackendRegistry
from nxauth.plugins.roles import AccountBackend as AccountBackend
from nxauth.plugins.roles import AuthBackend as AuthBackend
from nxauth.plugins.roles import Backend as Backend
from nxauth.plugins.roles import KeySource as KeySource
from nxauth.store.protocol import Cursor as Cursor
from nxauth.store.protocol import Store as Store
from nxauth.store.protocol import Transaction as Transaction
from nxauth.store.replay import ReplayGuard as ReplayGuard
from nxauth.usernames import InvalidUsername as InvalidUsername
from nxauth.usernames import normalize_username as normalize_username

__all__: list[str]
