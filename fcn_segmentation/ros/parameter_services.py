"""The node's parameter services, made safe against any request a node on the domain may send.

rclpy's own handlers (``rclpy/parameter_service.py``) raise on a value whose type is out of range
(``Parameter.from_parameter_msg``: "42 is not a valid Parameter.Type") and on some refusals, and an
exception in a service callback ends the node. ``guard_parameter_services`` replaces the set
handlers with ones that answer every such parameter with ``successful=False`` and the reason, and
wraps the read-only ones so that a failure answers with what was gathered, logged, never raised.
"""

from functools import partial

from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import (DescribeParameters, GetParameters, GetParameterTypes, ListParameters, SetParameters,
                                SetParametersAtomically)
from rclpy.parameter import Parameter

READ_SERVICES = (DescribeParameters, GetParameters, GetParameterTypes, ListParameters)


def guard_parameter_services(node) -> int:
    """Replace the callbacks of ``node``'s parameter services; returns how many were guarded."""
    guarded = 0
    for service in node.services:
        if service.srv_type is SetParameters:
            service.callback = partial(_set_parameters, node)
        elif service.srv_type is SetParametersAtomically:
            service.callback = partial(_set_parameters_atomically, node)
        elif service.srv_type in READ_SERVICES:
            service.callback = partial(_answer_anyway, node, service.srv_name, service.callback)
        else:
            continue
        guarded += 1
    return guarded


def _refusal(name: str, reason: str) -> SetParametersResult:
    return SetParametersResult(successful=False, reason=f"parameter '{name}': {reason}")


def _parameter(msg):
    """(Parameter, None), or (None, refusal) for a message rclpy cannot convert (a bad type number)."""
    try:
        return Parameter.from_parameter_msg(msg), None
    except (ValueError, TypeError, AttributeError) as exc:
        return None, _refusal(msg.name, f"{type(exc).__name__}: {exc}")


def _set(node, parameters) -> SetParametersResult:
    try:
        return node.set_parameters_atomically(parameters)
    except Exception as exc:  # not declared, read-only, wrong type, ...: a refusal, never a crash
        names = ", ".join(p.name for p in parameters)
        return _refusal(names, f"{type(exc).__name__}: {exc}")


def _set_parameters(node, request, response):
    for msg in request.parameters:
        parameter, refusal = _parameter(msg)
        response.results.append(refusal if refusal else _set(node, [parameter]))
    return response


def _set_parameters_atomically(node, request, response):
    parameters = []
    for msg in request.parameters:
        parameter, refusal = _parameter(msg)
        if refusal:  # all or none: one bad parameter refuses the request
            response.result = refusal
            return response
        parameters.append(parameter)
    response.result = _set(node, parameters)
    return response


def _answer_anyway(node, service_name, callback, request, response):
    try:
        return callback(request, response)
    except Exception as exc:
        node.get_logger().warning(f"{service_name}: {type(exc).__name__}: {exc}")
        return response
