"""The Redis Streams protocol shared by the daemons and the clients: keys, entry fields, and the scripts.

Keys (``[cluster]`` in the config; the defaults in brackets):

    jobs stream      [shmfetch:jobs]      entries ``url``, optional ``id`` (the client's job id) and
                                          ``reply_to`` (a stream key); every daemon reads it in one group
    results stream   [shmfetch:results]   one entry per job unless the job named its own ``reply_to``
    dead letters     <jobs>:dead          jobs delivered more than ``max_deliveries`` times
    cluster total    <jobs>:ok            INCR'ed with every ok result, in the step that acks the job

A result entry has the fields of the JSON Lines output (``protocol.RESULT_FIELDS``; str fields as they
are, the others as JSON, absent when None), plus ``job`` (the jobs-stream entry id), ``id`` (the
client's job id, when it gave one) and ``consumer`` (host:pid of the daemon that committed it).

Exactly one result per job: ``COMMIT`` below stores the result, acks the job and counts it in one
script, and only if the entry is still in the group's pending list *under the committing consumer*. A
consumer that was too slow (its entry was reclaimed by another with XAUTOCLAIM) gets 0 back and drops
its result; a commit retried after a lost reply finds the entry acked and also gets 0.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import urllib.parse
from typing import Any

from ..options import NAMES as OPTION_NAMES
from ..protocol import RESULT_FIELDS, Result

DEFAULT_JOBS = "shmfetch:jobs"
DEFAULT_GROUP = "shmfetch"
DEFAULT_RESULTS = "shmfetch:results"

# Every check comes before the first write: Redis does not roll back a script that fails halfway, so a
# write made before a failing one would stay, and the retried commit would store the result twice. The
# checks are the ways a write here can fail: a key of the wrong type, a total that is not an integer.
# KEYS: jobs, results (or the job's reply_to), cluster total, dead letters
# ARGV: group, consumer, entry id, results MAXLEN, ok (1/0), dead (1/0), reply TTL in ms (0: the shared
#       results stream, which does not expire), then field, value, ...
COMMIT = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then return 0 end
local function not_a_stream(key)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= 'stream' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a stream')
  end
  return false
end
local err = not_a_stream(KEYS[2]) or (ARGV[6] == '1' and not_a_stream(KEYS[4]))
if err then return err end
if ARGV[5] == '1' then
  local total = redis.call('GET', KEYS[3])
  if total and not tonumber(total) then
    return redis.error_reply('ERR ' .. KEYS[3] .. ' is not an integer')
  end
end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
if ARGV[7] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[7]) end
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'deliveries', tostring(p[1][4]), unpack(fields))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[5] == '1' then redis.call('INCR', KEYS[3]) end
return 1
"""

# Resets the idle time of the given entries that this consumer still owns, so that XAUTOCLAIM elsewhere
# does not take a job that is merely slow. An entry another consumer owns by now is not touched (a plain
# XCLAIM would steal it back) and is returned, so the caller stops working on it.
# KEYS: jobs   ARGV: group, consumer, entry id, ...
REFRESH = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 0 then
    lost[#lost + 1] = ARGV[i]
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost
"""

# Remove a consumer from the group only if it holds no pending entry, in one atomic step: XGROUP
# DELCONSUMER drops the consumer's pending entries with it, so a check made in a separate round trip could
# race with a read that just handed it jobs, and those jobs would be neither pending nor ever delivered
# again. Returns 1 if removed, 0 if it holds entries.
# KEYS: jobs   ARGV: group, consumer
FORGET = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class MalformedJob(ValueError):
    """A jobs-stream entry that is not a valid job; it is answered with a ``bad_request`` result."""


def consumer_name() -> str:
    """Unique and readable: the host name and the master's pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def total_key(jobs: str) -> str:
    return f"{jobs}:ok"


def dead_key(jobs: str) -> str:
    return f"{jobs}:dead"


def safe_url(url: str) -> str:
    """``url`` with every credential masked, for logs, errors and ``stats``: the password of ``user:pw@``
    (or ``:pw@``) and any query parameter redis-py would read a password from (``?password=``, also on
    ``unix://`` URLs where it is the documented form)."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a Redis URL that cannot be parsed>"
    netloc = p.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    query = "&".join(_mask_param(item) for item in p.query.split("&"))
    # Assembled by hand: urlunsplit drops the empty authority of unix:///path.
    return f"{p.scheme}://{netloc}{p.path}" + (f"?{query}" if p.query else "")


def _mask_param(item: str) -> str:
    name, eq, _ = item.partition("=")
    secret = "password" in urllib.parse.unquote_plus(name).lower()
    return f"{name}=***" if eq and secret else item


# -- jobs -------------------------------------------------------------------------------------------------


def job_fields(
    url: str,
    job_id: str | int | None = None,
    reply_to: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, str]:
    """A job entry's fields. ``options`` are the per-request options of shmfetch/options.py, one field
    each, as text (booleans ``true``/``false``); the daemon checks them as it checks a socket client's."""
    fields = {"url": url}
    if job_id is not None:
        fields["id"] = str(job_id)
    if reply_to:
        fields["reply_to"] = reply_to
    for name, v in (options or {}).items():
        fields[name] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return fields


def parse_job(
    fields: dict[bytes, bytes] | None,
) -> tuple[str, str | None, str | None, dict[str, str] | None]:
    """``(url, client id, reply_to, options)`` of a jobs-stream entry, the options as the text they
    arrived in (options.check types and bounds them); ``MalformedJob`` says what is wrong."""
    if not fields:
        raise MalformedJob("the entry has no fields")
    try:
        f = {k.decode(): v.decode() for k, v in fields.items()}
    except UnicodeDecodeError:
        raise MalformedJob("a field name or value is not UTF-8") from None
    unknown = set(f) - {"url", "id", "reply_to", *OPTION_NAMES}
    if unknown:
        raise MalformedJob(f"unknown field(s): {', '.join(sorted(unknown))}")
    url = f.get("url", "")
    if not url:
        raise MalformedJob("missing field 'url'")
    options = {k: v for k, v in f.items() if k in OPTION_NAMES}
    return url, f.get("id"), f.get("reply_to") or None, options or None


def reply_key(fields: dict[bytes, bytes] | None) -> str | None:
    """The ``reply_to`` of an entry, if it has a readable one (also for malformed entries)."""
    raw = (fields or {}).get(b"reply_to")
    try:
        return raw.decode() if raw else None
    except UnicodeDecodeError:
        return None


# -- results ----------------------------------------------------------------------------------------------


# Str fields travel as they are (the page text is most of a result: no JSON escaping on the master's
# loop); every other field as JSON, so a field the schema gains, of any type, needs no change here.
_STR_FIELDS = frozenset(f.name for f in dataclasses.fields(Result) if f.type in ("str", "str | None"))


def result_fields(job: str, job_id: str | None, consumer: str, frame: dict[str, Any]) -> list[Any]:
    """A result frame (the dispatcher's, with str values) as the flat field list of a results entry.

    A field whose value is None is left out; ``job``, ``id`` and ``consumer`` are plain strings.
    """
    out: list[Any] = ["job", job, "consumer", consumer]
    if job_id is not None:
        out += ["id", job_id]
    for name in RESULT_FIELDS:
        v = frame.get(name)
        if v is not None:
            out += [name, v if name in _STR_FIELDS else json.dumps(v)]
    return out


def parse_result(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A results entry as a dict: the ``Result`` fields it has, plus ``job``, ``id`` and ``consumer``
    (None when absent). ``protocol.Result.from_frame`` turns it into a ``Result``."""
    f = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
    out: dict[str, Any] = {"job": f.get("job"), "id": f.get("id"), "consumer": f.get("consumer")}
    for name in RESULT_FIELDS:
        if name in f:
            out[name] = f[name] if name in _STR_FIELDS else json.loads(f[name])
    return out


# -- replies ----------------------------------------------------------------------------------------------


def autoclaim_reply(reply: list[Any]) -> tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]], list[bytes]]:
    """``(next cursor, claimed entries, deleted ids)`` of a raw XAUTOCLAIM reply, from Redis 6.2 or 7.

    Redis 6.2 answers ``[cursor, entries]`` and shows an entry deleted from the stream as ``[id, nil]``
    among the claimed ones (it stays pending); Redis 7 answers ``[cursor, entries, deleted ids]`` and has
    already dropped those from the pending list (redis/redis-py#2134, whose parser fails on the 6.2 form:
    hence the raw reply). Each entry is ``[id, [field, value, ...]]``.
    """
    cursor = reply[0]
    claimed: list[tuple[bytes, dict[bytes, bytes]]] = []
    deleted: list[bytes] = list(reply[2]) if len(reply) > 2 and reply[2] else []
    for entry in reply[1] or []:
        if entry is None:
            continue
        eid, flat = entry[0], entry[1] if len(entry) > 1 else None
        if flat is None:
            deleted.append(eid)
        else:
            claimed.append((eid, dict(zip(flat[::2], flat[1::2], strict=True))))
    return cursor, claimed, deleted
