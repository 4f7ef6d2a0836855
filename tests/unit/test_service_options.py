"""The generic ``kind:PORT,key=value`` options of --serve (spec.KINDS rows) and application starters."""
import pytest

from mnet.services import applications, spec
from mnet.services.errors import ServiceSpecError
from mnet.services.spec import Service, ServiceKind, parse_service


@pytest.fixture
def web_kind(monkeypatch):
    def check(svc):
        if svc.option("mode", "a") not in ("a", "b"):
            raise ServiceSpecError("bad mode")

    kind = ServiceKind("web", "web:PORT,root=DIR[,mode=a|b][,peer=IP:PORT...]", keys=("root", "mode", "peer"),
                       required=("root",), repeatable=("peer",), check=check)
    monkeypatch.setitem(spec.KINDS, "web", kind)
    return kind


def test_options_keep_their_order_and_repeats(web_kind):
    svc = parse_service("web:80,root=/srv,peer=10.0.0.1:80,peer=10.0.0.2:80")
    assert svc == Service("web", 80, 0, (("root", "/srv"), ("peer", "10.0.0.1:80"), ("peer", "10.0.0.2:80")))
    assert svc.option("root") == "/srv" and svc.option("mode", "a") == "a"
    assert svc.all_options("peer") == ["10.0.0.1:80", "10.0.0.2:80"]


@pytest.mark.parametrize("text, fragment", [
    ("web:80", "web needs root=ROOT, as in web:80,root=DIR"),
    ("web:80,mode=a", "web needs root=ROOT"),
    ("web:80,root=/a,root=/b", "root= given twice"),
    ("web:80,root=/a,colour=red", "web takes root=, mode=, peer="),
    ("web:80,root=/a,mode=c", "bad mode"),
])
def test_bad_options_are_spec_errors(web_kind, text, fragment):
    with pytest.raises(ServiceSpecError, match=fragment):
        parse_service(text)


def test_an_application_starts_through_its_starter(monkeypatch):
    monkeypatch.setitem(applications.STARTERS, "web", "mnet.services.spec:parse_service")
    assert applications.starter("web") is parse_service
    assert applications.starter("tcp-echo") is None
