"""The committed caffe_pb2 matches caffe.proto, and the NVCaffe/BVLC field numbers are the upstream ones."""
import pathlib
import subprocess
import sys

import pytest

from distcaffe.proto import caffe_pb2 as pb

PROTO_DIR = pathlib.Path(__file__).resolve().parents[1] / "distcaffe" / "proto"

# (message, field, number): NVCaffe additions and core BVLC numbers that files on disk depend on.
FIELD_NUMBERS = [
    ("NetParameter", "layer", 100), ("NetParameter", "layers", 2), ("NetParameter", "input_dim", 4),
    ("NetParameter", "default_forward_type", 11), ("NetParameter", "default_backward_type", 12),
    ("NetParameter", "default_forward_math", 13), ("NetParameter", "default_backward_math", 14),
    ("NetParameter", "global_grad_scale", 15), ("NetParameter", "global_grad_scale_adaptive", 16),
    ("NetParameter", "default_conv_algos_override", 17), ("NetParameter", "reduce_buckets", 18),
    ("NetParameter", "default_cudnn_math_override", 19), ("NetParameter", "eltwise_mem_sharing", 20),
    ("LayerParameter", "forward_type", 145), ("LayerParameter", "backward_type", 146),
    ("LayerParameter", "forward_math", 147), ("LayerParameter", "backward_math", 148),
    ("LayerParameter", "cudnn_math_override", 150), ("LayerParameter", "transform_param", 100),
    ("LayerParameter", "annotated_data_param", 200), ("LayerParameter", "multibox_loss_param", 201),
    ("LayerParameter", "permute_param", 202), ("LayerParameter", "prior_box_param", 203),
    ("LayerParameter", "detection_output_param", 204), ("LayerParameter", "detection_evaluate_param", 205),
    ("LayerParameter", "norm_param", 206), ("LayerParameter", "detectnet_groundtruth_param", 6801),
    ("LayerParameter", "detectnet_augmentation_param", 6802),
    ("ConvolutionParameter", "cudnn_convolution_algo_seeker", 19),
    ("ConvolutionParameter", "conv_algos_override", 20),
    ("SolverParameter", "rampup_interval", 41), ("SolverParameter", "rampup_lr", 42),
    ("SolverParameter", "min_lr", 43), ("SolverParameter", "solver_data_type", 44),
    ("SolverParameter", "store_blobs_in_old_format", 45), ("SolverParameter", "momentum_policy", 46),
    ("SolverParameter", "max_momentum", 47), ("SolverParameter", "momentum_power", 48),
    ("SolverParameter", "larc", 49), ("SolverParameter", "larc_eta", 51),
    ("SolverParameter", "larc_policy", 50), ("SolverParameter", "weight_decay_policy", 52),
    ("SolverParameter", "weight_decay_power", 53), ("SolverParameter", "max_weight_decay", 56),
    ("SolverParameter", "larc_turbo", 55),
    ("SolverParameter", "test_and_snapshot_last_epochs", 54), ("SolverParameter", "eval_type", 241),
    ("SolverParameter", "ap_version", 242), ("SolverParameter", "type", 40),
    ("SolverParameter", "solver_type", 30),
    ("TransformationParameter", "use_gpu_transform", 8),
    ("TransformationParameter", "img_rand_resize_lower", 10),
    ("TransformationParameter", "img_rand_resize_upper", 11),
    ("TransformationParameter", "rand_resize_ratio_lower", 12),
    ("TransformationParameter", "rand_resize_ratio_upper", 13),
    ("TransformationParameter", "vertical_stretch_lower", 14),
    ("TransformationParameter", "vertical_stretch_upper", 15),
    ("TransformationParameter", "horizontal_stretch_lower", 16),
    ("TransformationParameter", "horizontal_stretch_upper", 17),
    ("TransformationParameter", "interpolation_algo_down", 18),
    ("TransformationParameter", "interpolation_algo_up", 19),
    ("TransformationParameter", "allow_upscale", 20),
    ("DataParameter", "threads", 11), ("DataParameter", "parser_threads", 12),
    ("DataParameter", "cache", 13), ("DataParameter", "shuffle", 14),
    ("ImageDataParameter", "short_side", 13), ("ImageDataParameter", "threads", 14),
    ("ImageDataParameter", "cache", 15), ("ImageDataParameter", "precache", 16),
    ("LayerParameter", "recurrent_param", 151), ("LayerParameter", "trt_param", 152),
    ("ELUParameter", "lambda", 2), ("BatchNormParameter", "scale_bias", 7),
    ("BlobProto", "raw_data_type", 10), ("BlobProto", "raw_diff_type", 11),
    ("BlobProto", "raw_data", 12), ("BlobProto", "raw_diff", 13), ("BlobProto", "double_data", 8),
    ("BlobProto", "shape", 7), ("Datum", "channels", 1), ("Datum", "encoded", 7),
    ("SolverState", "history", 3), ("SolverState", "current_step", 4),
    ("V1LayerParameter", "layer", 1), ("V1LayerParameter", "blobs_lr", 7),
    ("V0LayerParameter", "kernelsize", 8), ("V0LayerParameter", "batchsize", 19),
]


def test_generated_module_is_fresh(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I%s" % PROTO_DIR, "--python_out=%s" % tmp_path,
                    str(PROTO_DIR / "caffe.proto")], check=True)
    fresh = (tmp_path / "caffe_pb2.py").read_text()
    committed = (PROTO_DIR / "caffe_pb2.py").read_text()
    assert fresh == committed, "distcaffe/proto/caffe_pb2.py is stale: run `make proto` and commit it"


@pytest.mark.parametrize("message,field,number", FIELD_NUMBERS)
def test_field_numbers(message, field, number):
    assert getattr(pb, message).DESCRIPTOR.fields_by_name[field].number == number


def test_type_enum_and_int32_counts():
    assert [pb.Type.Name(i) for i in range(6)] == ["DOUBLE", "FLOAT", "FLOAT16", "INT", "UINT", "BOOL"]
    int32 = pb.SolverParameter.DESCRIPTOR.fields_by_name["max_iter"].type
    for msg, field in [("SolverParameter", "display"), ("SolverParameter", "test_iter"), ("Datum", "channels")]:
        assert getattr(pb, msg).DESCRIPTOR.fields_by_name[field].type == int32


def test_v1_layer_type_enum_complete():
    from distcaffe.io.upgrade import V1_TO_V2_TYPE
    assert set(V1_TO_V2_TYPE) == set(pb.V1LayerParameter.LayerType.values())
