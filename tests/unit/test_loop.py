import os
import threading

from nicdev.net.loop import EventLoop


def test_reader_timer_and_threadsafe_callbacks():
    loop = EventLoop()
    r, w = os.pipe()
    seen = []

    def on_readable():
        seen.append(("fd", os.read(r, 10)))

    loop.add_reader(r, on_readable)
    os.write(w, b"hi")
    loop.run_once(1.0)
    assert seen == [("fd", b"hi")]

    timer = loop.call_later(0.0, lambda: seen.append("cancelled"))
    timer.cancel()
    loop.call_later(0.01, lambda: seen.append("timer"))
    loop.call_later(0.02, loop.stop)
    loop.run(timeout=5)
    assert seen[-1] == "timer" and "cancelled" not in seen

    thread = threading.Thread(target=loop.run, kwargs={"timeout": 10})
    thread.start()
    loop.call_soon_threadsafe(lambda: seen.append("soon"))
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    assert not thread.is_alive() and seen[-1] == "soon"
    loop.remove_reader(r)
    loop.close()
    os.close(r)
    os.close(w)


def test_failing_handler_does_not_stop_the_loop():
    loop = EventLoop()
    r, w = os.pipe()
    calls = []

    def broken():
        os.read(r, 10)
        calls.append("broken")
        raise RuntimeError("boom")

    loop.add_reader(r, broken)
    loop.call_later(0.01, lambda: calls.append("timer"))
    os.write(w, b"x")
    loop.run(until=lambda: "timer" in calls, timeout=5)
    assert calls == ["broken", "timer"]
    loop.close()
    os.close(r)
    os.close(w)


def test_pollers_run_every_turn_without_blocking_until_they_stop():
    loop = EventLoop()
    r, w = os.pipe()
    calls = []

    def poller():
        calls.append("poll")
        return len(calls) < 3           # the third call says: done

    loop.add_poller(poller)
    assert loop.polling
    for _ in range(3):
        loop.run_once(60.0)             # would block a minute without the poller
    assert calls == ["poll"] * 3 and not loop.polling
    os.write(w, b"x")                   # with no poller the loop blocks in select again:
    loop.add_reader(r, lambda: calls.append(os.read(r, 1)))
    loop.run_once(60.0)                 # returns because the fd is readable
    assert calls[-1] == b"x"
    loop.remove_reader(r)
    loop.close()
    os.close(r)
    os.close(w)


def test_removed_and_failing_pollers_stop_being_called():
    loop = EventLoop()
    calls = []

    def kept():
        calls.append("kept")
        return True

    def broken():
        calls.append("broken")
        raise RuntimeError("boom")

    loop.add_poller(kept)
    loop.add_poller(broken)
    loop.add_poller(kept)               # adding twice keeps one
    loop.run_once(60.0)
    loop.run_once(60.0)
    assert calls == ["kept", "broken", "kept"]
    loop.remove_poller(kept)
    loop.remove_poller(kept)            # removing twice is fine
    assert not loop.polling
    loop.close()


def test_a_poller_runs_after_the_turns_fds_and_timers():
    loop = EventLoop()
    order = []
    loop.call_later(0, lambda: order.append("timer"))
    loop.call_soon_threadsafe(lambda: order.append("soon"))
    loop.add_poller(lambda: order.append("poller") or False)
    loop.run_once(60.0)
    assert order == ["soon", "timer", "poller"]
    loop.close()
