"""GetModelStatus and GetModelMetadata answers, built once for both APIs.

The REST renderings follow TF Serving's http_rest_api_util.cc: the status response is
the proto's JSON with every field printed; the metadata response is
``{"model_spec": ..., "metadata": {"signature_def": ...}}`` with proto field names kept.
"""

from __future__ import annotations

from serveprof.server.core import ServingCore, version_of
from serveprof.wire.status import invalid_argument


def model_status_response(core: ServingCore, model_spec):
    from tensorflow_serving.apis import get_model_status_pb2

    version, label = version_of(model_spec)
    if label:
        raise invalid_argument(f"Unrecognized servable version label: {label}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for number, state, code, message in core.model_status(model_spec.name, version):
        status = response.model_version_status.add()
        status.version = number
        status.state = int(state)
        status.status.error_code = code
        status.status.error_message = message
    return response


def model_metadata_response(core: ServingCore, request):
    from tensorflow_serving.apis import get_model_metadata_pb2

    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != "signature_def":
            raise invalid_argument(f"Metadata field {field} is not supported")
    version, label = version_of(request.model_spec)
    served_version, servable = core.resolve(request.model_spec.name, version, label)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = served_version
    # As get_model_metadata_impl.cc: an Any packing a SignatureDefMap.
    response.metadata["signature_def"].Pack(servable.signature_def_map)
    return response


def model_spec_proto(name: str, version: int | None, label: str | None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
    return spec


def status_json(response) -> bytes:
    from google.protobuf import json_format

    return json_format.MessageToJson(response, indent=1, always_print_fields_with_no_presence=True).encode() + b"\n"


def metadata_json(response) -> bytes:
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    options = dict(indent=1, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_def_map)
    model_spec = json_format.MessageToJson(response.model_spec, **options)
    signature_defs = json_format.MessageToJson(signature_def_map, **options)
    return f'{{\n"model_spec":{model_spec},\n"metadata": {{"signature_def": {signature_defs}}}\n}}\n'.encode()
