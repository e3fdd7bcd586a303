"""Every typed error has an HTTP status in the one mapping table, and its code is unique and stable."""
import importlib
import pkgutil

import satflow.domain
from satflow.api.errors import HTTP_STATUS
from satflow.domain.errors import all_error_classes


def _import_all_domain_modules():
    for mod in pkgutil.iter_modules(satflow.domain.__path__):
        importlib.import_module(f"satflow.domain.{mod.name}")


def test_every_error_class_has_an_http_status():
    _import_all_domain_modules()
    missing = [cls.__qualname__ for cls in all_error_classes() if cls not in HTTP_STATUS]
    assert not missing, f"add these to satflow.api.errors.HTTP_STATUS: {missing}"


def test_statuses_follow_the_contract():
    _import_all_domain_modules()
    for cls in all_error_classes():
        status = HTTP_STATUS[cls]
        assert status in (400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504), cls  # 429: public-route throttle
        names = [c.__name__ for c in cls.__mro__]
        if "ValidationError" in names:
            assert status == 400, cls
        if "BusinessRejection" in names:
            assert status == 422, cls


def test_codes_are_unique():
    _import_all_domain_modules()
    codes = [cls.code for cls in all_error_classes()]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
