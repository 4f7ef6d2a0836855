"""The chat's sans-IO parts: the room (nicknames, broadcast, notices, commands, limits),
the line reader (CRLF, limits, bad UTF-8) and the ``chat:PORT`` options."""
import pytest

from mnet.apps.chat.lines import OVERLONG, LineReader
from mnet.apps.chat.options import ChatOptions, chat_options
from mnet.apps.chat.room import STRIKES, Hangup, Room, Send
from mnet.services.errors import ServiceSpecError
from mnet.services.spec import parse_service
from support.cli import assert_one_line_error, mnet


def texts(events, to):
    return [e.text for e in events if isinstance(e, Send) and e.to == to]


@pytest.fixture
def room():
    """A room with alice (1), bob (2) and carol (3) in it."""
    r = Room(max_clients=5, max_line=100)
    for client, nick in ((1, "alice"), (2, "bob"), (3, "carol")):
        r.connect(client)
        r.line(client, nick)
    return r


def test_a_client_is_welcomed_and_joins_with_its_first_line():
    r = Room(max_clients=5, max_line=100)
    welcome = r.connect(1)
    assert len(welcome) == 1 and welcome[0].to == 1 and "nickname" in welcome[0].text
    assert r.line(1, "alice") == [Send(1, "* hello alice; nobody else is here yet")]
    r.connect(2)
    assert r.line(2, "bob") == [Send(2, "* hello bob; here: alice"), Send(1, "* bob joined")]
    assert r.nicks() == ["alice", "bob"]


@pytest.mark.parametrize("nick", ["", "al ice", "9lives", "-x", "a" * 17, "émile", "a/b", "<bob>"])
def test_a_bad_nickname_gets_an_error_and_another_try(nick):
    r = Room(max_clients=5, max_line=100)
    r.connect(1)
    events = r.line(1, nick)
    assert len(events) == 1 and events[0].to == 1
    assert events[0].text.startswith("! bad nickname") and events[0].text.endswith("try again")
    assert r.nick(1) is None
    assert r.line(1, "a" * 16)[0] == Send(1, f"* hello {'a' * 16}; nobody else is here yet")


def test_a_taken_nickname_is_refused_whatever_its_case(room):
    room.connect(4)
    assert room.line(4, "ALICE") == [Send(4, "! nickname ALICE is taken; try again")]
    events = room.line(4, "dave")
    assert texts(events, 1) == texts(events, 2) == texts(events, 3) == ["* dave joined"]


def test_a_line_goes_to_every_other_joined_client(room):
    room.connect(4)  # not named yet: it gets nothing
    events = room.line(1, "hello all")
    assert events == [Send(2, "<alice> hello all"), Send(3, "<alice> hello all")]


def test_empty_lines_are_ignored_and_a_double_slash_sends_a_slash(room):
    assert room.line(1, "") == []
    assert texts(room.line(1, "//etc/passwd is a file"), 2) == ["<alice> /etc/passwd is a file"]


def test_leaving_tells_the_others(room):
    assert room.leave(2) == [Send(1, "* bob left"), Send(3, "* bob left")]
    assert texts(room.leave(3, "connection reset"), 1) == ["* carol left (connection reset)"]
    assert room.leave(3) == []  # once
    assert room.nicks() == ["alice"]
    room.connect(4)
    assert room.leave(4) == []  # it never joined: nobody knew it


def test_who_me_help_and_unknown_commands(room):
    assert room.line(2, "/who") == [Send(2, "* here (3): alice, bob, carol")]
    assert room.line(2, "/me waves") == [Send(1, "* bob waves"), Send(3, "* bob waves")]
    assert room.line(2, "/me") == [Send(2, "! usage: /me ACTION")]
    assert len(room.line(2, "/help")) >= 4
    assert room.line(2, "/dance") == [Send(2, "! unknown command /dance; /help lists the commands")]


def test_nick_renames_and_everyone_is_told(room):
    events = room.line(1, "/nick alicia")
    assert [e.to for e in events] == [1, 2, 3]
    assert {e.text for e in events} == {"* alice is now known as alicia"}
    assert room.line(1, "/nick bob") == [Send(1, "! nickname bob is taken")]
    assert room.line(1, "/nick b c") == [Send(1, "! bad nickname 'b c': use 1-16 letters, digits, _ or -, starting with a letter")]
    assert room.line(1, "/nick") == [Send(1, "! usage: /nick NEW")]
    assert texts(room.line(1, "/nick Alicia"), 1) == ["* alicia is now known as Alicia"]  # its own, recased
    assert texts(room.line(2, "hi"), 1) == ["<bob> hi"]
    room.connect(4)
    assert room.line(4, "alice")[0].text.startswith("* hello alice")  # the old name is free


def test_quit_says_bye_hangs_up_and_tells_the_others(room):
    events = room.line(2, "/quit see you")
    assert events[:2] == [Send(2, "* bye"), Hangup(2)]
    assert texts(events, 1) == texts(events, 3) == ["* bob left (see you)"]
    assert room.nicks() == ["alice", "carol"]
    room.connect(4)
    assert room.line(4, "/quit") == [Send(4, "* bye"), Hangup(4)]  # before a nickname too


def test_a_full_room_refuses_and_hangs_up():
    r = Room(max_clients=2, max_line=100)
    r.connect(1)
    r.connect(2)
    events = r.connect(3)
    assert events == [Send(3, "! the chat is full (2 clients); try again later"), Hangup(3)]
    assert len(r) == 2
    r.leave(1)
    assert r.connect(3)[0].text.startswith("* welcome")


def test_a_client_without_a_nickname_by_its_deadline_goes(room):
    assert room.nickname_deadline(1, 60) == []  # alice has one
    room.connect(4)
    room.line(4, "no good")
    assert room.nickname_deadline(4, 60) == [Send(4, "! no nickname within 60 s: disconnecting"), Hangup(4)]
    assert len(room) == 3 and room.leave(4) == []


def test_over_long_lines_are_refused_and_too_many_in_a_row_drop_the_client(room):
    for _ in range(STRIKES - 1):
        assert room.overlong(2) == [Send(2, "! line too long (over 100 bytes): not sent")]
        assert texts(room.line(2, "short"), 1) == ["<bob> short"]  # a good line: it starts over
    for _ in range(STRIKES - 1):
        room.overlong(2)
    events = room.overlong(2)
    assert events[:2] == [Send(2, f"! {STRIKES} over-long lines in a row: disconnecting"), Hangup(2)]
    assert texts(events, 1) == ["* bob left (too many over-long lines)"]


def test_lines_end_with_lf_or_crlf_and_may_come_in_pieces():
    r = LineReader(100)
    assert r.feed(b"alice\r\nhel") == ["alice"]
    assert r.feed(b"lo\n\n") == ["hello", ""]
    assert r.feed(b"a\rb\n") == ["a\ufffdb"]  # a lone CR is a control character, not an end
    assert r.finish() == []


def test_bad_utf8_and_control_characters_are_replaced():
    r = LineReader(100)
    assert r.feed("caf\u00e9 ".encode() + b"\xff\xfe \x1b[31mred\x07\tx\n") == ["caf\u00e9 \ufffd\ufffd \ufffd[31mred\ufffd\tx"]


def test_an_over_long_line_comes_out_once_and_the_next_line_is_whole():
    r = LineReader(10)
    assert r.feed(b"x" * 10 + b"\r\n") == ["x" * 10]  # exactly the limit: fine
    assert r.feed(b"y" * 11 + b"\n") == [OVERLONG]
    assert r.feed(b"z" * 8) == []
    assert r.feed(b"z" * 8) == [OVERLONG]  # known too long before its end
    assert r.feed(b"z" * 1000) == []  # dropped as it comes
    assert r.feed(b"zz\nok\n") == ["ok"]


def test_the_last_line_without_its_lf_counts_at_the_end():
    r = LineReader(10)
    assert r.feed(b"bye") == []
    assert r.finish() == ["bye"]
    r.feed(b"q" * 20)
    assert r.finish() == []


def test_chat_options():
    assert chat_options(parse_service("chat:7000")) == ChatOptions()
    assert chat_options(parse_service("chat:7000,max_clients=3,max_line=64")) == ChatOptions(3, 64)


@pytest.mark.parametrize("text, fragment", [
    ("chat:7000,max_clients=0", "max_clients must be 1..10000, not '0'"),
    ("chat:7000,max_line=x", "max_line must be 16..65536, not 'x'"),
    ("chat:7000,colour=red", "chat takes max_clients=, max_line="),
])
def test_bad_chat_options(text, fragment):
    with pytest.raises(ServiceSpecError, match=fragment):
        parse_service(text)


def test_mnet_stack_says_a_bad_chat_option_in_one_line(tmp_path):
    r = mnet("stack", "--nic", f"vhost-user:{tmp_path / 'x.sock'}", "--ip", "10.0.0.9/24",
             "--serve", "chat:7000,max_line=2")
    assert_one_line_error(r, "stack", "bad --serve chat:7000: max_line must be 16..65536, not '2'")
