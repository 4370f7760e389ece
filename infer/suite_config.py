"""The import path of the suite's config from before infer/suite/ was a package (the README documented it)."""

from .suite.config import Judge, SuiteConfig, SuiteIntent, SuitePersona, Thresholds

__all__ = ["Judge", "SuiteConfig", "SuiteIntent", "SuitePersona", "Thresholds"]
