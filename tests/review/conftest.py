from tests.support.review import eager, make_samples, second_reviewer  # noqa: F401 - fixtures
