"""TF Serving's wire formats and status codes, shared by the embedded server and the clients.

TensorProto <-> numpy (``tensor_codec``), the REST API's JSON tensors (``json_codec``)
and TF Serving's error codes (``status``). Nothing here imports TensorFlow.
"""
