"""A fast protobuf text-format reader for Caffe's messages: one compiled regular expression splits the whole
text into field items, which are assigned straight into the message by its descriptors. It gives exactly what
`text_format.Parse` gives (same tokens, same value conversions -- text_format's own functions -- same
duplicate-field rule) and declines (returns False) for anything else: every error, extensions, Any, groups,
maps, oneofs. The caller then runs text_format, so errors keep its file:line:col messages."""
import itertools
import re

from google.protobuf import text_encoding, text_format
from google.protobuf.descriptor import FieldDescriptor as FD

_atoms = itertools.count()


def _atomic(pattern, name=None):
    """`pattern` matched atomically (never backtracked into, so a comment's text cannot turn into a value), written
    as a lookahead plus a backreference: Python 3.11.2's re gets possessive repeats of groups wrong."""
    name = name or "a%d" % next(_atoms)
    return "(?=(?P<%s>%s))(?P=%s)" % (name, pattern, name)


def _skip():
    return _atomic(r"\s*(?:#[^\n]*\s*)*")                                # text_format's whitespace and comments


_WORD = r"(?:[a-zA-Z_][0-9a-zA-Z_+-]*|(?:[0-9+-]|\.[0-9])[0-9a-zA-Z_.+-]*)"  # its identifier / number token
_PIECE = r"""(?:"[^"\n\\]*(?:\\.[^"\n\\]*)*"|'[^'\n\\]*(?:\\.[^'\n\\]*)*')"""  # its quoted string token
# One item per match: `[name [:]] {|<|[`, `[name [:]] value` (no name: an element of a `[...]` list), a closing
# `}`/`>`/`]`, any other character (never valid here) or the end; each with the `,` or `;` that may follow it.
_ITEM = re.compile(
    _skip() + r"(?:(?:" + _atomic(r"[a-zA-Z_][0-9a-zA-Z_+-]*", "name") + _skip() + r"(?P<colon>:)?" + _skip() +
    r")?(?:(?P<opening>[{<\[])|" + _atomic(_WORD, "word") + "|" +
    _atomic(_PIECE + "(?:" + _skip() + _PIECE + ")*", "strings") + r")|(?P<closing>[}>\]])|(?P<other>.)|\Z)" +
    _skip() + r"(?P<sep>[,;]?)", re.DOTALL)
_GROUPS = ("name", "colon", "opening", "word", "strings", "closing", "other", "sep")
_PIECES = re.compile("(" + _PIECE + r")|#[^\n]*")           # the strings, not the comments between
_CLOSE = {"{": "}", "<": ">"}
MESSAGE, WORD, STRING, BYTES = range(4)                      # how a field's value is written
_ANY, _VALUE, _END = range(3)
_BOOLS = {"true": True, "t": True, "1": True, "True": True, "false": False, "f": False, "0": False, "False": False}
_SIGNED = {FD.TYPE_INT32: (True, False), FD.TYPE_SINT32: (True, False), FD.TYPE_SFIXED32: (True, False),
           FD.TYPE_INT64: (True, True), FD.TYPE_SINT64: (True, True), FD.TYPE_SFIXED64: (True, True),
           FD.TYPE_UINT32: (False, False), FD.TYPE_FIXED32: (False, False),
           FD.TYPE_UINT64: (False, True), FD.TYPE_FIXED64: (False, True)}
_PLANS = {}


class _Decline(Exception):
    """The text is not one this reader handles exactly; text_format decides."""


def _integer(signed, long):
    def convert(token):
        if token.isdigit() and (token[0] != "0" or len(token) == 1):
            return int(token)                    # the message's own range check rejects what text_format would
        return text_format.ParseInteger(token, signed, long)
    return convert


def _enum(field):
    numbers = {v.name: v.number for v in field.enum_type.values}
    return lambda token: numbers[token] if token in numbers else text_format.ParseEnum(field, token)


def _field_plan(field):
    """(how its value is written, repeated?, converter of a word token or plan of a message) or None where
    text_format decides."""
    if field.containing_oneof is not None or field.type == FD.TYPE_GROUP or \
            (not field.is_repeated and not field.has_presence):
        return None
    if field.type == FD.TYPE_MESSAGE:
        return None if field.message_type.GetOptions().map_entry else \
            (MESSAGE, field.is_repeated, _plan(field.message_type))
    if field.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return (STRING if field.type == FD.TYPE_STRING else BYTES), field.is_repeated, None
    if field.type in _SIGNED:
        convert = _integer(*_SIGNED[field.type])
    elif field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        convert = text_format.ParseFloat
    elif field.type == FD.TYPE_BOOL:
        convert = _BOOLS.__getitem__
    else:
        convert = _enum(field)
    return WORD, field.is_repeated, convert


def _plan(descriptor):
    """Field name -> _field_plan of a message type and, through them, of the types it holds (cached)."""
    plan = _PLANS.get(descriptor.full_name)
    if plan is None:
        plan = _PLANS[descriptor.full_name] = {}
        for field in descriptor.fields:
            entry = _field_plan(field)
            if entry is not None:
                plan[field.name] = entry
    return plan


def _string(text, kind):
    """The value of adjacent quoted strings, converted as text_format does (C escapes, UTF-8 for strings)."""
    if "\\" not in text and text.find(text[0], 1) == len(text) - 1:
        return text[1:-1] if kind == STRING else text[1:-1].encode("utf-8")
    raw = b"".join(text_encoding.CUnescape(p[1:-1]) for p in _PIECES.findall(text) if p)
    return raw.decode("utf-8") if kind == STRING else raw


def parse(text, message):
    """Merge prototxt `text` (str) into the empty `message` as text_format.Parse would; False where it declines
    (the message is then partly filled: start over with a new one)."""
    try:
        _parse(text, message)
    except Exception:  # noqa: BLE001 - any doubt at all is text_format's to judge, with its own message
        return False
    return True


def _parse(text, message):
    """parse's walk over the items; raises _Decline (or any error a conversion raises) where text_format decides."""
    stack = []                # (message, plan, closing token, name of the list it is an element of) of parents
    plan, close_token, element_of = _plan(message.DESCRIPTOR), "", None
    in_list = None            # (name, kind, convert) of the open `[...]` list
    expect = _ANY             # in that list: a value or `]` (_ANY), a value (_VALUE, after `,`), `]` (_END)
    for item in _ITEM.finditer(text):
        name, colon, opening, word, strings, closing, other, sep = item.group(*_GROUPS)
        if in_list is None:
            if name:
                kind, repeated, convert = plan[name]
                if word:
                    if kind != WORD or not colon:
                        raise _Decline
                    value = convert(word)
                elif strings:
                    if not colon or (kind != STRING and kind != BYTES):
                        raise _Decline
                    value = _string(strings, kind)
                elif opening == "[":
                    if not repeated or (kind != MESSAGE and not colon) or sep:
                        raise _Decline
                    in_list, expect = (name, kind, convert), _ANY
                    continue
                else:
                    if kind != MESSAGE or sep:
                        raise _Decline
                    stack.append((message, plan, close_token, element_of))
                    if repeated:
                        message = getattr(message, name).add()
                    elif message.HasField(name):
                        raise _Decline
                    else:
                        message = getattr(message, name)
                        message.SetInParent()
                    plan, close_token, element_of = convert, _CLOSE[opening], None
                    continue
                if repeated:
                    getattr(message, name).append(value)
                elif message.HasField(name):
                    raise _Decline
                else:
                    setattr(message, name, value)
            elif closing:
                if closing != close_token:
                    raise _Decline
                lname = element_of
                message, plan, close_token, element_of = stack.pop()
                if lname is not None:          # back in the `[...]` list this message is an element of
                    in_list, expect = (lname, MESSAGE, plan[lname][2]), _list_separator(sep)
            elif opening or word or strings or other:
                raise _Decline
        else:
            if closing == "]" and expect != _VALUE:
                in_list = None
                continue
            lname, kind, convert = in_list
            if name or expect == _END:
                raise _Decline
            if word and kind == WORD:
                getattr(message, lname).append(convert(word))
            elif strings and (kind == STRING or kind == BYTES):
                getattr(message, lname).append(_string(strings, kind))
            elif opening and opening != "[" and kind == MESSAGE and not sep:
                stack.append((message, plan, close_token, element_of))
                message, plan, close_token = getattr(message, lname).add(), convert, _CLOSE[opening]
                in_list, element_of = None, lname
                continue
            else:
                raise _Decline
            expect = _list_separator(sep)
    if stack or in_list is not None:
        raise _Decline


def _list_separator(sep):
    """What may follow a list value given the separator after it: another value after `,`, else `]`."""
    if sep == ";":
        raise _Decline
    return _VALUE if sep else _END
