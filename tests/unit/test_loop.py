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
