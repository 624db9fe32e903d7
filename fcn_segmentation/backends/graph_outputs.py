"""The outputs the CPU runtimes add to an ONNX scores graph, in memory (the file stays the plain
scores graph that TensorRT and the tests see): per-pixel class ids, and the scores sampled every
``scores_stride``-th pixel when the caller needs no more (the node's confidence monitor)."""

from typing import NamedTuple, Optional

import numpy as np

CLASS_IDS = "class_ids"
SAMPLED_SCORES = "sampled_scores"


def with_class_ids(onnx_path, scores_stride: int = 1) -> bytes:
    """The model with a second output, the per-pixel argmax of its scores as uint8 (1, h, w): ONNX
    Runtime's ArgMax takes under 1 ms where numpy's over the class axis takes ~5 ms (11 x 224 x 320).

    ``scores_stride`` s > 1: the first output becomes ``scores[:, :, ::s, ::s]``. On a sub-pixel graph
    (``SubPixelUpsampler``: a convolution to C x r x r phases, DepthToSpace, a crop) both outputs are
    then taken from the phases, before the full-resolution scores exist: the argmax over the classes
    of each phase, then DepthToSpace and the crop on the class ids; the sampled scores are the phases
    that fall on the sampled pixels. OpenVINO spent a fifth of its INT8 network's time rearranging,
    transposing and copying the full-resolution scores (README, Performance)."""
    import onnx

    model = onnx.load(str(onnx_path))
    graph = model.graph
    scores = graph.output[0].name
    sub_pixel = _sub_pixel_tail(graph, scores) if scores_stride > 1 else None
    if sub_pixel is not None and _add_from_phases(graph, sub_pixel, scores_stride):
        return model.SerializeToString()
    _add_class_ids_from_scores(graph, scores)
    if scores_stride > 1:
        _replace_scores_output(graph, _strided(graph, scores, scores_stride))
    return model.SerializeToString()


def _add_class_ids_from_scores(graph, scores: str) -> None:
    """The scores are transposed to (1, h, w, C) first: OpenVINO's ArgMax (a TopK) over the class
    axis of its blocked layout took a quarter of its INT8 network's time, over the last axis it is
    cheap (README, Performance)."""
    from onnx import TensorProto, helper

    graph.node.extend([helper.make_node("Transpose", [scores], ["scores_nhwc"], perm=[0, 2, 3, 1]),
                       helper.make_node("ArgMax", ["scores_nhwc"], ["class_ids_int64"], axis=3, keepdims=0),
                       helper.make_node("Cast", ["class_ids_int64"], [CLASS_IDS], to=TensorProto.UINT8)])
    graph.output.append(helper.make_tensor_value_info(CLASS_IDS, TensorProto.UINT8, None))


class _SubPixelTail(NamedTuple):
    phases: str      # the DepthToSpace's input: C x factor x factor phases
    factor: int
    crops: list      # the Slice nodes, DepthToSpace -> output
    classes: int
    height: int
    width: int


def _sub_pixel_tail(graph, scores: str) -> Optional[_SubPixelTail]:
    """The scores output's producers when they are DepthToSpace (CRD) and Slice nodes only, with a
    static (1, C, H, W) output shape; else None."""
    producers = {output: node for node in graph.node for output in node.output}
    crops, node = [], producers.get(scores)
    while node is not None and node.op_type == "Slice":
        crops.append(node)
        node = producers.get(node.input[0])
    if node is None or node.op_type != "DepthToSpace" or not crops:
        return None
    attributes = {a.name: a for a in node.attribute}
    mode = attributes["mode"].s.decode() if "mode" in attributes else "DCR"
    dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    if mode != "CRD" or len(dims) != 4 or not all(dims):
        return None
    return _SubPixelTail(node.input[0], attributes["blocksize"].i, list(reversed(crops)), *dims[1:])


def _crop_starts(graph, crops):
    """(row, column) where the crop starts, when the slices crop only rows and columns with step 1."""
    constants = _constants(graph)
    starts = {2: 0, 3: 0}
    for node in crops:
        values = [constants.get(name) for name in node.input[1:]]
        if any(v is None for v in values[:1] + values[2:]):
            return None
        begin, axes = values[0], values[2] if len(values) > 2 else np.arange(len(values[0]))
        steps = values[3] if len(values) > 3 and values[3] is not None else np.ones_like(begin)
        for start, axis, step in zip(begin, axes, steps):
            if int(axis) not in starts or int(step) != 1 or int(start) < 0:
                return None
            starts[int(axis)] += int(start)
    return starts[2], starts[3]


def _constants(graph):
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _add_from_phases(graph, tail: _SubPixelTail, stride: int) -> bool:
    from onnx import TensorProto, helper, numpy_helper

    starts = _crop_starts(graph, tail.crops)
    r = tail.factor
    if starts is None or r % stride or tail.height % stride or tail.width % stride:
        return False
    row, column = starts

    def constant(name, values):
        graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    # class ids: argmax over the classes of each phase, then the phases' layout and crop
    graph.node.extend([
        helper.make_node("Shape", [tail.phases], ["phases_shape"], start=2),
        helper.make_node("Concat", [constant("phases_by_class_leading", [1, tail.classes, r * r]), "phases_shape"],
                         ["phases_by_class_shape"], axis=0),
        helper.make_node("Reshape", [tail.phases, "phases_by_class_shape"], ["phases_by_class"]),
        helper.make_node("ArgMax", ["phases_by_class"], ["phase_ids_int64"], axis=1, keepdims=0),
        helper.make_node("Cast", ["phase_ids_int64"], ["phase_ids"], to=TensorProto.UINT8),
        helper.make_node("DepthToSpace", ["phase_ids"], ["uncropped_ids"], blocksize=r, mode="CRD"),
        helper.make_node("Slice", ["uncropped_ids", constant("ids_starts", [row, column]),
                                   constant("ids_ends", [row + tail.height, column + tail.width]),
                                   constant("ids_axes", [2, 3])], ["cropped_ids"]),
        helper.make_node("Squeeze", ["cropped_ids", constant("ids_channel_axis", [1])], [CLASS_IDS])])
    # sampled scores: the phases a = row + s*k (mod r) of the uncropped rows row + s*k (columns alike);
    # in their DepthToSpace, uncropped row U = s*m + row % s, so the sampled rows start at m = row // s
    per_side = r // stride
    phase_rows = sorted((row + stride * k) % r for k in range(per_side))
    phase_columns = sorted((column + stride * k) % r for k in range(per_side))
    kept = [c * r * r + a * r + b for c in range(tail.classes) for a in phase_rows for b in phase_columns]
    first_row, first_column = row // stride, column // stride
    graph.node.extend([
        helper.make_node("Gather", [tail.phases, constant("sampled_phases", kept)], ["kept_phases"], axis=1),
        helper.make_node("DepthToSpace", ["kept_phases"], ["uncropped_sampled"], blocksize=per_side, mode="CRD"),
        helper.make_node("Slice", ["uncropped_sampled", constant("sampled_starts", [first_row, first_column]),
                                   constant("sampled_ends", [first_row + tail.height // stride,
                                                             first_column + tail.width // stride]),
                                   constant("sampled_axes", [2, 3])], [SAMPLED_SCORES])])
    graph.output.append(helper.make_tensor_value_info(CLASS_IDS, TensorProto.UINT8, None))
    _replace_scores_output(graph, SAMPLED_SCORES)
    return True


def _strided(graph, scores: str, stride: int) -> str:
    from onnx import helper, numpy_helper

    for name, values in (("strided_starts", [0, 0]), ("strided_ends", [2 ** 31 - 1] * 2), ("strided_axes", [2, 3]),
                         ("strided_steps", [stride, stride])):
        graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
    graph.node.append(helper.make_node("Slice", [scores, "strided_starts", "strided_ends", "strided_axes",
                                                 "strided_steps"], [SAMPLED_SCORES]))
    return SAMPLED_SCORES


def _replace_scores_output(graph, name: str) -> None:
    from onnx import TensorProto, helper

    rest = list(graph.output[1:])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(name, TensorProto.FLOAT, None), *rest])
