"""A server-binding psycopg cursor on Django's connection, for statements that send vectors as parameters.

Django's psycopg cursors bind on the client: they print every parameter into the SQL text, so a 1536-d vector
becomes 1,536 printed floats that the server parses again (about 2 ms of CPU on each side). On this cursor a
vector goes in pgvector's binary form (4 bytes a dimension): a numpy array as a `vector` value (the pipeline's
writes, `%b`), or a `VectorParameter` (a query vector, whose type the SQL's cast gives). It runs in Django's
current transaction (the same connection), so SET LOCAL and atomic blocks apply to it as to any query.
"""
import contextlib
import struct

import numpy as np
from django.db import connection

_vector_type = None  # pgvector's TypeInfo, looked up once per process


class VectorParameter:
    """A query vector as one bound parameter on `binary_cursor`, in pgvector's binary form. Its SQL must cast it
    (`%s::vector(1536)`): the cast gives the parameter its type."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = np.asarray(array, dtype=np.float32)


def _binary_dumper():
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class VectorParameterDumper(Dumper):
        format = Format.BINARY  # vector_recv's input: int16 dim, int16 unused, big-endian float4s

        def dump(self, obj):
            return struct.pack(">HH", obj.array.shape[0], 0) + obj.array.astype(">f4").tobytes()

    return VectorParameterDumper


@contextlib.contextmanager
def binary_cursor():
    """A psycopg cursor that binds on the server, on Django's connection (in its current transaction)."""
    global _vector_type
    import psycopg
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    connection.ensure_connection()
    raw = connection.connection
    if _vector_type is None:
        _vector_type = TypeInfo.fetch(raw, "vector")
    with psycopg.Cursor(raw) as cursor:
        register_vector_info(cursor, _vector_type)  # on this cursor only: nothing else in the process changes
        cursor.adapters.register_dumper(VectorParameter, _binary_dumper())
        yield cursor
