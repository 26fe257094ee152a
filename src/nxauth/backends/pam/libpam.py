"""The one place where nxauth touches a PAM handle: a small ctypes layer over
libpam, built on python-pam's ctypes definitions of the PAM ABI.

Why not ``pam.authenticate()``?  python-pam (>= 2.1) is the dependency (the
``pam`` extra) and its module-level call is thread-safe, but it cannot
make nxauth a correct PAM application:

- it sets no ``PAM_RHOST`` and takes ``PAM_TTY`` from ``$DISPLAY`` or the
  process's terminal, so ``pam_access`` sees a console login and
  ``pam_faillock`` cannot count per host;
- its conversation answers the first message of *every* conversation call
  with the password and every later echo-off prompt with NULL, so a second
  question (a one-time code) gets the password or nothing;
- it has no ``pam_get_item``, so the name PAM ends with (``PAM_USER`` may be
  rewritten by a module) cannot be read;
- it always calls ``pam_setcred`` and resolves libpam with
  ``find_library("pam")``, which ignores ``LD_PRELOAD`` (pam_wrapper).

So this module binds libpam's functions itself, from a library path the
backend is configured with (default: the system libpam), using python-pam's
structures (``PamHandle``, ``PamMessage``, ``PamResponse``, ``PamConv``,
``conv_func``) and constants, so there is one definition of the ABI.

Threads: every login gets its own handle (:meth:`LibPam.start`); the bound
functions are shared and release the GIL while libpam runs.  The conversation
callback is one C function for the whole process; it finds the login's
handler through an integer key in ``appdata_ptr`` (never a raw pointer to a
Python object), and it never lets an exception escape into libpam (ctypes
would turn it into ``PAM_SUCCESS``).

Memory: libpam frees the responses with ``free()``, so they are allocated
with libc's ``calloc``.  Every answer handed over as a ``bytearray`` is wiped
as soon as it has been copied into libpam's memory, so the only copies of a
password left are the caller's ``str`` and what the PAM modules keep (and
wipe) themselves.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import itertools
import threading
from collections.abc import Callable, Sequence
from ctypes.util import find_library
from types import TracebackType
from typing import Any, Final, final

__all__ = [
    "PAM",
    "ConversationHandler",
    "LibPam",
    "PamStartError",
    "PythonPamMissing",
    "Transaction",
    "load_libpam",
    "shadow_password_locked",
]

MIN_PYTHON_PAM: Final = (2, 1)
#: Linux-PAM's PAM_MAX_NUM_MSG: more messages in one call is a broken module.
MAX_MESSAGES: Final = 32


class PythonPamMissing(ImportError):
    """python-pam (>= 2.1) is not installed, or its ctypes layer changed."""


@final
class PamStartError(Exception):
    """``pam_start`` failed (an unknown service is *not* this: libpam falls
    back to ``other``).  The message is libpam's text; no secret in it."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        super().__init__(f"pam_start failed: {text} ({code})")


_REQUIRED: Final = (
    "PAM_SUCCESS",
    "PAM_ACCT_EXPIRED",
    "PAM_AUTH_ERR",
    "PAM_AUTHTOK_EXPIRED",
    "PAM_BUF_ERR",
    "PAM_CONV_ERR",
    "PAM_DISALLOW_NULL_AUTHTOK",
    "PAM_ERROR_MSG",
    "PAM_MAXTRIES",
    "PAM_NEW_AUTHTOK_REQD",
    "PAM_PERM_DENIED",
    "PAM_PROMPT_ECHO_OFF",
    "PAM_PROMPT_ECHO_ON",
    "PAM_RHOST",
    "PAM_TEXT_INFO",
    "PAM_TTY",
    "PAM_USER",
    "PAM_USER_UNKNOWN",
)


class _PamAbi:
    """python-pam's ctypes definitions and constants, imported once."""

    def __init__(self) -> None:
        try:
            version = importlib.metadata.version("python-pam")
            module = importlib.import_module("pam")
            internals = importlib.import_module("pam.__internals")
        except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
            raise PythonPamMissing("python-pam is not installed") from exc
        numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
        if numbers < MIN_PYTHON_PAM:
            raise PythonPamMissing(f"python-pam {version} is too old (need >= 2.1)")
        try:
            self.PamHandle: Any = internals.PamHandle
            self.PamMessage: Any = internals.PamMessage
            self.PamResponse: Any = internals.PamResponse
            self.PamConv: Any = internals.PamConv
            self.conv_func: Any = internals.conv_func
            for name in dir(module):
                if name.startswith("PAM_") and isinstance(getattr(module, name), int):
                    setattr(self, name, int(getattr(module, name)))
            for name in _REQUIRED:
                getattr(self, name)
        except AttributeError as exc:
            raise PythonPamMissing(f"python-pam {version} has an unexpected ctypes layer: {exc}") from exc
        self.version = version

    def __getattr__(self, name: str) -> int:  # for mypy: the constants set above
        raise AttributeError(name)


_abi: _PamAbi | None = None
_abi_lock = threading.Lock()


def abi() -> _PamAbi:
    """python-pam's definitions (raises :class:`PythonPamMissing`)."""
    global _abi  # noqa: PLW0603 - a cache of an import, like sys.modules
    if _abi is None:
        with _abi_lock:
            if _abi is None:
                _abi = _PamAbi()
    return _abi


class _Constants:
    """Attribute access to the PAM constants (``PAM.AUTH_ERR``)."""

    def __getattr__(self, name: str) -> int:
        value: int = getattr(abi(), f"PAM_{name}")
        setattr(self, name, value)  # later reads are plain attribute reads
        return value


#: ``PAM.AUTH_ERR`` etc.: python-pam's constants, read on first use.
PAM: Final = _Constants()

# ------------------------------------------------------------ libc

_libc = ctypes.CDLL(None, use_errno=True)
_calloc = _libc.calloc
_calloc.restype = ctypes.c_void_p
_calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
_free = _libc.free
_free.restype = None
_free.argtypes = [ctypes.c_void_p]


def _wipe(buffer: bytearray) -> None:
    buffer[:] = bytes(len(buffer))


# ------------------------------------------------------------ the conversation

#: A login's conversation: gets ``[(msg_style, text bytes), ...]`` and returns
#: one answer per message (a ``bytearray`` for a prompt, ``None`` for a
#: message).  Raising anything makes the conversation fail (``PAM_CONV_ERR``).
ConversationHandler = Callable[[Sequence[tuple[int, bytes]]], Sequence[bytearray | None]]

_handlers: dict[int, ConversationHandler] = {}
_keys = itertools.count(1)


def _converse(count: int, messages: Any, responses: Any, appdata: int | None) -> int:
    """The C conversation function (``struct pam_conv.conv``) for every handle."""
    try:
        handler = _handlers.get(appdata or 0)
        if handler is None or not 0 < count <= MAX_MESSAGES or not messages or not responses:
            return PAM.CONV_ERR
        items: list[tuple[int, bytes]] = []
        for index in range(count):
            pointer = messages[index]
            if not pointer:
                return PAM.CONV_ERR
            message = pointer.contents
            items.append((int(message.msg_style), message.msg or b""))
        answers = list(handler(items))
        try:
            if len(answers) != count:
                return PAM.CONV_ERR
            return _respond(answers, responses)
        finally:
            for answer in answers:
                if answer is not None:
                    _wipe(answer)
    except BaseException:  # noqa: BLE001 - nothing may escape into libpam
        return PAM.CONV_ERR


def _respond(answers: list[bytearray | None], responses: Any) -> int:
    """Copy the answers into a calloc'd ``struct pam_response[]`` for libpam."""
    pam = abi()
    size = ctypes.sizeof(pam.PamResponse)
    array = _calloc(len(answers), size)
    if not array:
        return PAM.BUF_ERR
    replies = ctypes.cast(array, ctypes.POINTER(pam.PamResponse))
    allocated: list[tuple[int, int]] = []
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        length = len(answer)
        text = _calloc(length + 1, 1)
        if not text:
            for address, used in allocated:
                ctypes.memset(address, 0, used)
                _free(address)
            _free(array)
            return PAM.BUF_ERR
        if length:
            ctypes.memmove(text, (ctypes.c_char * length).from_buffer(answer), length)
        allocated.append((text, length))
        replies[index].resp = text
        replies[index].resp_retcode = 0
    responses[0] = replies
    return PAM.SUCCESS


_callback: Any = None
_callback_lock = threading.Lock()


def _c_callback() -> Any:
    global _callback  # noqa: PLW0603 - one C callback for the process, kept alive forever
    if _callback is None:
        with _callback_lock:
            if _callback is None:
                _callback = abi().conv_func(_converse)
    return _callback


# ------------------------------------------------------------ libpam


@final
class LibPam:
    """libpam's functions, bound from one library (the system libpam, or
    ``libpam_wrapper.so`` in tests)."""

    def __init__(self, path: str | None = None) -> None:
        pam = abi()
        if path is None:
            try:
                library = ctypes.CDLL("libpam.so.0")
            except OSError:
                found = find_library("pam")
                if found is None:
                    raise OSError("libpam not found") from None
                library = ctypes.CDLL(found)
        else:
            library = ctypes.CDLL(path)
        self.path = path or "libpam.so.0"
        handle, conv = pam.PamHandle, pam.PamConv

        def bind(name: str, restype: Any, *argtypes: Any) -> Any:
            function = getattr(library, name)
            function.restype = restype
            function.argtypes = list(argtypes)
            return function

        c_int, c_char_p, c_void_p = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
        self.pam_start = bind("pam_start", c_int, c_char_p, c_char_p, ctypes.POINTER(conv), ctypes.POINTER(handle))
        self.pam_end = bind("pam_end", c_int, handle, c_int)
        self.pam_set_item = bind("pam_set_item", c_int, handle, c_int, c_void_p)
        self.pam_get_item = bind("pam_get_item", c_int, handle, c_int, ctypes.POINTER(c_void_p))
        self.pam_authenticate = bind("pam_authenticate", c_int, handle, c_int)
        self.pam_acct_mgmt = bind("pam_acct_mgmt", c_int, handle, c_int)
        self.pam_strerror = bind("pam_strerror", c_char_p, handle, c_int)
        self._library = library

    def start(self, service: bytes, user: bytes, handler: ConversationHandler) -> Transaction:
        """``pam_start``: a new handle for one login.  Use it as a context
        manager; ``pam_end`` runs on exit.  Raises :class:`PamStartError`."""
        return Transaction(self, service, user, handler)

    def __repr__(self) -> str:
        return f"LibPam({self.path!r})"


_libraries: dict[str | None, LibPam] = {}
_libraries_lock = threading.Lock()


def load_libpam(path: str | None = None) -> LibPam:
    """The :class:`LibPam` for ``path`` (``None``: the system libpam), loaded
    once per process: a dlopen handle is process-wide anyway.  Raises
    :class:`PythonPamMissing` or :class:`OSError`."""
    library = _libraries.get(path)
    if library is None:
        with _libraries_lock:
            library = _libraries.get(path)
            if library is None:
                library = _libraries[path] = LibPam(path)
    return library


@final
class Transaction:
    """One PAM handle, from ``pam_start`` to ``pam_end``.  Not shared between
    threads; ``status`` is what ``pam_end`` is given (the last call's result)."""

    def __init__(self, lib: LibPam, service: bytes, user: bytes, handler: ConversationHandler) -> None:
        pam = abi()
        self._lib = lib
        self._key = next(_keys)
        self._conv = pam.PamConv(_c_callback(), ctypes.c_void_p(self._key))
        self._handle = pam.PamHandle()
        self.status = PAM.SUCCESS
        _handlers[self._key] = handler
        try:
            code = int(lib.pam_start(service, user, ctypes.byref(self._conv), ctypes.byref(self._handle)))
            if code != PAM.SUCCESS or not self._handle.handle:
                raise PamStartError(code, self.strerror(code))
        except BaseException:
            _handlers.pop(self._key, None)
            self._handle = None
            raise

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.end()

    def end(self) -> None:
        """``pam_end`` (once); the conversation is forgotten."""
        handle, self._handle = self._handle, None
        try:
            if handle is not None:
                self._lib.pam_end(handle, self.status)
        finally:
            _handlers.pop(self._key, None)

    def _live(self) -> Any:
        if self._handle is None:
            raise RuntimeError("the PAM handle is closed")
        return self._handle

    def set_item(self, item: int, value: bytes) -> int:
        """``pam_set_item`` for a string item (libpam copies the string)."""
        return int(self._lib.pam_set_item(self._live(), item, ctypes.c_char_p(value)))

    def get_string_item(self, item: int) -> bytes | None:
        """``pam_get_item`` for a string item (``PAM_USER``), or ``None``."""
        pointer = ctypes.c_void_p()
        code = int(self._lib.pam_get_item(self._live(), item, ctypes.byref(pointer)))
        if code != PAM.SUCCESS or not pointer.value:
            return None
        return ctypes.string_at(pointer.value)

    def authenticate(self, flags: int = 0) -> int:
        self.status = int(self._lib.pam_authenticate(self._live(), flags))
        return self.status

    def acct_mgmt(self, flags: int = 0) -> int:
        self.status = int(self._lib.pam_acct_mgmt(self._live(), flags))
        return self.status

    def strerror(self, code: int) -> str:
        """libpam's text for ``code``."""
        handle = self._handle if self._handle is not None else abi().PamHandle()
        text = self._lib.pam_strerror(handle, code)
        return text.decode("utf-8", "replace") if text else f"PAM error {code}"


# ------------------------------------------------------------ shadow


class _Spwd(ctypes.Structure):
    _fields_ = [
        ("sp_namp", ctypes.c_char_p),
        ("sp_pwdp", ctypes.c_void_p),
        ("sp_lstchg", ctypes.c_long),
        ("sp_min", ctypes.c_long),
        ("sp_max", ctypes.c_long),
        ("sp_warn", ctypes.c_long),
        ("sp_inact", ctypes.c_long),
        ("sp_expire", ctypes.c_long),
        ("sp_flag", ctypes.c_ulong),
    ]


_getspnam_r: Any = getattr(_libc, "getspnam_r", None)
if _getspnam_r is not None:
    _getspnam_r.restype = ctypes.c_int
    _getspnam_r.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(_Spwd),
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.POINTER(_Spwd)),
    ]

_ERANGE: Final = 34


def shadow_password_locked(user: bytes) -> bool | None:
    """Whether the user's shadow password is locked (``usermod -L``,
    ``passwd -l``: the hash starts with ``!``), through NSS's ``getspnam_r``.
    ``None`` when it cannot be told (not root, no shadow entry, no
    ``getspnam_r``).  The buffer that held the hash is wiped."""
    if _getspnam_r is None or b"\x00" in user:
        return None
    size = 1024
    while size <= 1 << 20:
        entry = _Spwd()
        result = ctypes.POINTER(_Spwd)()
        buffer = ctypes.create_string_buffer(size)
        try:
            code = _getspnam_r(user, ctypes.byref(entry), buffer, size, ctypes.byref(result))
            if code == _ERANGE:
                size *= 4
                continue
            if code != 0 or not result or not entry.sp_pwdp:
                return None
            return ctypes.string_at(entry.sp_pwdp, 1) == b"!"
        finally:
            ctypes.memset(buffer, 0, size)
    return None
