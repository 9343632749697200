"""The 16-joint skeleton, its bones and the action classes."""
import pytest

from actiongen.skeleton import ACTIONS, BONES, H36M_INDICES, HIP, JOINT_NAMES, NUM_JOINTS, POSE_DIM, action_index


def test_joint_names_and_mocap_indices_follow_the_issue_order():
    assert JOINT_NAMES == ("Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax", "Head",
                           "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist")
    assert H36M_INDICES == (0, 1, 2, 3, 6, 7, 8, 12, 13, 15, 17, 18, 19, 25, 26, 27)
    assert NUM_JOINTS == 16 and JOINT_NAMES[HIP] == "Hip" and POSE_DIM == 30


def test_bones_form_a_tree_rooted_at_the_hip():
    assert len(BONES) == 15
    children = [child for _, child, _ in BONES]
    # Every joint but the hip hangs from exactly one parent, so drawing the bones covers the body once.
    assert sorted(children) == [j for j in range(NUM_JOINTS) if j != HIP]
    parent_of = {child: parent for parent, child, _ in BONES}
    for joint in range(NUM_JOINTS):
        steps = 0
        while joint != HIP:
            joint = parent_of[joint]
            steps += 1
            assert steps < NUM_JOINTS, "cycle in BONES"


def test_bone_sides_match_the_joint_names():
    expected_chains = {("Hip", "RHip"), ("RHip", "RKnee"), ("RKnee", "RFoot"), ("Hip", "LHip"), ("LHip", "LKnee"),
                       ("LKnee", "LFoot"), ("Hip", "Spine"), ("Spine", "Thorax"), ("Thorax", "Head"),
                       ("Thorax", "LShoulder"), ("LShoulder", "LElbow"), ("LElbow", "LWrist"),
                       ("Thorax", "RShoulder"), ("RShoulder", "RElbow"), ("RElbow", "RWrist")}
    assert {(JOINT_NAMES[p], JOINT_NAMES[c]) for p, c, _ in BONES} == expected_chains
    for _, child, side in BONES:
        name = JOINT_NAMES[child]
        expected = {"L": "left", "R": "right"}.get(name[0], "center")
        assert side == expected, f"bone to {name} marked {side}"


def test_actions_are_the_ten_classes_in_order():
    assert ACTIONS == ("Directions", "Discussion", "Eating", "Greeting", "Phoning",
                       "Posing", "Sitting", "SittingDown", "Smoking", "Walking")


@pytest.mark.parametrize("name", ["SittingDown", "sittingdown", "SITTINGDOWN", "  SittingDown "])
def test_action_index_is_case_insensitive(name):
    assert action_index(name) == ACTIONS.index("SittingDown")


def test_action_index_uses_the_given_action_list():
    assert action_index("walking", ("Walking", "Sitting")) == 0
    with pytest.raises(ValueError, match="valid actions: Walking, Sitting"):
        action_index("Eating", ("Walking", "Sitting"))


@pytest.mark.parametrize("name", ["Sit", "Walkin", "", "Sitting Down"])
def test_unknown_action_lists_the_valid_names(name):
    with pytest.raises(ValueError) as err:
        action_index(name)
    message = str(err.value)
    assert repr(name) in message
    assert all(action in message for action in ACTIONS)
