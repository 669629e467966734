"""Launch the closed loop: tabletop simulator, reward node (request mode), SAC learner.

    ros2 launch launch/closed_loop.launch.py task:=reach total_steps:=10000 log_dir:=/tmp/closed_loop

Run it from a source checkout (the simulator and the learner are developer tools in
``sole_r1_tools/``, which colcon does not install); ``repo`` defaults to this file's checkout.
``python -m sole_r1_tools.learner.closed_loop`` starts the same three processes with the same
params files, then runs the ground-truth and random baselines and writes the results.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node

_REPO = Path(__file__).resolve().parents[1]


def generate_launch_description() -> LaunchDescription:
    """The three processes with the params files in config/closed_loop/."""
    repo = LaunchConfiguration("repo")
    config = PathJoinSubstitution([repo, "config", "closed_loop"])
    log_dir = LaunchConfiguration("log_dir")
    args = [
        DeclareLaunchArgument("repo", default_value=str(_REPO), description="source checkout of sole_r1_ros"),
        DeclareLaunchArgument("python", default_value="python3", description="interpreter with rclpy and torch"),
        DeclareLaunchArgument("task", default_value="reach", description="reach | push"),
        DeclareLaunchArgument("total_steps", default_value="4000", description="environment steps of training"),
        DeclareLaunchArgument("seed", default_value="0", description="learner seed"),
        DeclareLaunchArgument("model_path", default_value="", description="reward model ('' = built-in default)"),
        DeclareLaunchArgument("log_dir", default_value="/tmp/sole_r1_closed_loop",
                              description="learner log, answers and ground-truth log"),
    ]
    sim = ExecuteProcess(
        cmd=[LaunchConfiguration("python"), "-m", "sole_r1_tools.sim.ros_driver", "--ros-args",
             "--params-file", PathJoinSubstitution([config, "tabletop_sim.yaml"]),
             "-p", ["task:=", LaunchConfiguration("task")],
             "-p", ["ground_truth_log:=", PathJoinSubstitution([log_dir, "ground_truth.jsonl"])]],
        cwd=repo, output="screen", name="tabletop_sim",
    )
    reward = Node(
        package="sole_r1_ros", executable="reward_node", name="sole_r1_reward", output="screen",
        parameters=[PathJoinSubstitution([config, "reward_node.yaml"]),
                    {"model.path": LaunchConfiguration("model_path")}],
    )
    learner = ExecuteProcess(
        cmd=[LaunchConfiguration("python"), "-m", "sole_r1_tools.learner.node", "--ros-args",
             "--params-file", PathJoinSubstitution([config, "learner.yaml"]),
             "-p", ["loop.total_steps:=", LaunchConfiguration("total_steps")],
             "-p", ["loop.seed:=", LaunchConfiguration("seed")],
             "-p", ["log_path:=", PathJoinSubstitution([log_dir, "learner.jsonl"])]],
        cwd=repo, output="screen", name="chunk_learner",
        on_exit=[Shutdown(reason="the learner finished")],
    )
    return LaunchDescription([*args, sim, reward, learner])
