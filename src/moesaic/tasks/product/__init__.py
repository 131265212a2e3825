"""Product descriptions: stage 1 attributes (JSON schema), stage 2 grounded shop copy."""

from moesaic.tasks.product.command import DescribeProductConfig, ProductResult, ProductTask, describe_product
from moesaic.tasks.product.grounding import Violation, find_violations
from moesaic.tasks.product.schema import ProductAttributes, SchemaMismatchError, parse_attributes

__all__ = [
    "DescribeProductConfig",
    "ProductResult",
    "ProductTask",
    "describe_product",
    "Violation",
    "find_violations",
    "ProductAttributes",
    "SchemaMismatchError",
    "parse_attributes",
]
