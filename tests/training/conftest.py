from tests.support.review import eager, make_samples  # noqa: F401 - fixtures
