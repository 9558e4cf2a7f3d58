"""The node's DICOMweb service under ``/dicom-web`` (PS3.18): STOW-RS in, QIDO-RS and WADO-RS out.

* ``POST /studies[/{study}]``: Store Instances (10.5,
  :mod:`~node.http.dicomweb.routes_stow`). The multipart/related body is
  streamed to part files (never held in memory) and refused with 413 once it
  crosses ``api.max_upload_mb``.
* ``GET /studies``, ``/series``, ``/instances`` (and nested forms): Search
  (10.6, :mod:`~node.http.dicomweb.routes_search`), over the node's results
  and, with ``api.serve_inputs``, its inputs.
* ``GET .../metadata`` and study/series/instance retrieval (10.4,
  :mod:`~node.http.dicomweb.routes_retrieve`), plus the bulk data URIs the
  metadata points at, and frames and rendered images
  (:mod:`~node.http.dicomweb.routes_frames`).

The REST API's bearer tokens guard every endpoint. The sender tokens of
configured sources (``sources.<name>.api_tokens``) open STOW-RS only: a
PACS that sends studies cannot read what the node holds. A STOW-RS request
made with a sender token records that source as the sender of each
instance, so the study's completeness is checked against it
(:class:`node.study.assembler.CompletenessCheck`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from node.http.auth import bearer_auth
from node.http.context import ApiContext
from node.http.dicomweb.openapi import documented
from node.http.dicomweb.query import DicomwebQueries
from node.http.dicomweb.routes_retrieve import retrieve_routes
from node.http.dicomweb.routes_search import search_routes
from node.http.dicomweb.routes_stow import stow_routes


def dicomweb_router(ctx: ApiContext) -> APIRouter:
    """The ``/dicom-web`` routes over the node's services."""
    router = APIRouter(tags=["dicomweb"], responses=documented(401, 422, 503))
    store_auth = bearer_auth(ctx.api, ctx.tokens, ctx.sender_tokens)  # API and sender tokens
    stow = APIRouter(dependencies=[Depends(store_auth)])
    stow_routes(stow, ctx, store_auth)
    reads = APIRouter(dependencies=[Depends(bearer_auth(ctx.api, ctx.tokens))])  # API tokens only
    queries = DicomwebQueries(ctx.listings, ctx.api.serve_inputs)
    search_routes(reads, queries)
    retrieve_routes(reads, queries)
    router.include_router(stow)
    router.include_router(reads)
    return router
